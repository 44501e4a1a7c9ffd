"""The app's upkeep: the start-up check of the database, then settling what died and backing up, on a timer.

`at_start(store)` runs once when the app starts: SQLite's quick check of
the database file (a damaged file stops the app with `DatabaseDamaged`,
whose message says how to restore it), `jobs.tick` (jobs and runs
whose process died while the app was down get their final state, whatever
tab anyone opens later; queued jobs start) and a backup when one is due.
`start(store)` then repeats that every UPKEEP_SECONDS and the backup on its schedule in
a daemon thread, so a job or run that dies while the app is up is settled
within seconds even when nobody has the Train tab open.
"""

import logging
import threading

from workbench import database_file, jobs
from workbench.store import Store

UPKEEP_SECONDS = 5.0
log = logging.getLogger(__name__)


def at_start(store: Store) -> None:
    """Check the database (DatabaseDamaged when it is unsound), settle what died, back up when due."""
    store.check_integrity()
    tick(store)


def tick(store: Store) -> None:
    """One round of upkeep; never raises (a failed backup or settle is logged and tried again next round)."""
    try:
        jobs.tick(store)  # settles jobs and runs whose process died, starts queued jobs
    except Exception as exc:  # e.g. the disk is full: the next round settles them
        log.warning("could not settle dead jobs and runs yet: %s", exc)
    if database_file.backup_due():
        try:
            path = store.back_up()
            log.info("database backed up to %s", path)
        except Exception as exc:  # a backup must never stop the app; the older ones are kept
            log.warning("database backup failed: %s", exc)


def start(store: Store, every_s: float = UPKEEP_SECONDS) -> threading.Event:
    """Run `tick` every `every_s` in a daemon thread; set the returned event to stop it."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(every_s):
            tick(store)

    threading.Thread(target=loop, name="workbench-upkeep", daemon=True).start()
    return stop
