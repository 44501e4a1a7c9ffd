"""Scripts that remake the shipped demo assets: the demo world (generated benchmarks, search corpora, expert
traces) and the demo items and traces in workbench/demo. Nothing at run time imports this package; the app
reads the assets' paths from `workbench.settings`."""
