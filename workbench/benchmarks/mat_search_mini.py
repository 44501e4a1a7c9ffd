"""MAT-Search-mini: a small generated knowledge world, its search corpus and multi-hop questions.

Each entity is a fictional company whose emblem (a coloured shape) is what
its image shows. The corpus says which company has which emblem, where each
company is based and when it was founded, and which country each city is
in. Simple questions need one search (emblem -> city or year), hard ones two
(emblem -> company -> its country or founder). Files are written in MAT-Search
format (`id, question, answer, image_path, split`) with a JSONL corpus for
the local search backend. Seeded: the same arguments give the same world.
"""

import json
import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

SHAPES = ["circle", "square", "triangle", "diamond", "star", "cross"]
COLOURS = {"red": (210, 40, 40), "green": (30, 150, 60), "blue": (40, 80, 210), "yellow": (235, 200, 20),
           "purple": (140, 50, 180), "orange": (240, 130, 20)}
SYLLABLES = ["ka", "lo", "ven", "tor", "mi", "sa", "rel", "do", "qua", "ni", "bri", "zen", "ha", "pol"]
COUNTRIES = ["Elbonia", "Norvania", "Costaverde", "Ardenia", "Molvany", "Zembla"]
SIZE = 224


@dataclass
class Company:
    name: str
    shape: str
    colour: str
    city: str
    country: str
    founded: int
    founder: str

    @property
    def emblem(self) -> str:
        return f"{self.colour} {self.shape}"


def _name(rng: random.Random, parts: int = 2) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(parts)).capitalize()


def build_world(seed: int = 0) -> list[Company]:
    """One company per (colour, shape) emblem, each with a city, country, year and founder."""
    rng = random.Random(seed)
    cities = {}
    while len(cities) < 12:
        cities[_name(rng, 2) + rng.choice(["ia", "on", "um", "a"])] = rng.choice(COUNTRIES)
    city_names = sorted(cities)
    companies, used = [], set()
    for colour in COLOURS:
        for shape in SHAPES:
            name = _name(rng, 3)
            while name in used:
                name = _name(rng, 3)
            used.add(name)
            city = rng.choice(city_names)
            companies.append(Company(name, shape, colour, city, cities[city], rng.randrange(1890, 2015),
                                     f"{_name(rng, 2)} {_name(rng, 2)}"))
    return companies


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, centre: tuple[int, int], r: int, fill) -> None:
    """One filled shape of "radius" r; shared with MAT-Coding-mini."""
    cx, cy = centre
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif shape == "square":
        draw.rectangle((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
    elif shape == "diamond":
        draw.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=fill)
    elif shape == "star":
        draw.regular_polygon((cx, cy, r), 5, fill=fill)
        draw.regular_polygon((cx, cy, r), 5, rotation=36, fill=fill)
    elif shape == "cross":
        arm = max(2, r * 22 // 70)
        draw.rectangle((cx - r, cy - arm, cx + r, cy + arm), fill=fill)
        draw.rectangle((cx - arm, cy - r, cx + arm, cy + r), fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}")


def draw_emblem(company: Company, rng: random.Random) -> Image.Image:
    image = Image.new("RGB", (SIZE, SIZE), (rng.randrange(235, 256),) * 3)
    draw_shape(ImageDraw.Draw(image), company.shape, (SIZE // 2, SIZE // 2), 70, COLOURS[company.colour])
    return image


def corpus_documents(companies: list[Company]) -> list[dict]:
    docs = []
    for company in companies:
        docs.append({"id": f"{company.name}-emblem", "title": company.name,
                     "text": f"{company.name} is a company whose emblem is a {company.emblem}. It was founded "
                             f"in {company.founded} and is headquartered in {company.city}."})
        docs.append({"id": f"{company.name}-founder", "title": f"Founder of {company.name}",
                     "text": f"The company {company.name} was started by {company.founder}."})
    for city, country in sorted({(c.city, c.country) for c in companies}):
        docs.append({"id": f"{city}-city", "title": city, "text": f"{city} is a city in {country}."})
    return docs


# Simple kinds need one search (emblem -> fact); hard kinds two (emblem -> company -> fact).
QUESTIONS = {
    "city": ("In which city is the company with this emblem headquartered?", "city"),
    "founded": ("In which year was the company with this emblem founded?", "founded"),
    "country": ("In which country is the company with this emblem headquartered?", "country"),
    "founder": ("Who started the company with this emblem?", "founder"),
}


def emblem_query(company: Company) -> str:
    return f"company with a {company.emblem} emblem"


def generate(out_dir: str | Path, count: int = 150, seed: int = 0, question_seed: int | None = None,
             worlds: int = 1) -> tuple[Path, Path]:
    """Write images, mat_search_mini.json and corpus.jsonl into out_dir; returns (questions, corpus).

    `seed` fixes the world (companies, corpus); `question_seed` (default: seed)
    draws the questions, so held-out questions can share the train world.
    With `worlds` > 1, question i comes from world `seed + i % worlds`, whose
    corpus is corpus_<k>.jsonl (named in the record's "corpus"); corpus.jsonl
    is the first world's. Many small worlds are how training data teaches
    reading the search results: no company recurs often enough to be memorised.
    """
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = random.Random((seed if question_seed is None else question_seed) + 1)
    all_companies = [build_world(seed + k) for k in range(worlds)]
    corpora = ["corpus.jsonl"] if worlds == 1 else [f"corpus_{k}.jsonl" for k in range(worlds)]
    simple = count // 2
    records = []
    for item_id in range(count):
        world = item_id % worlds
        company = rng.choice(all_companies[world])
        image_name = f"images/emblem_{item_id}.png"
        draw_emblem(company, rng).save(out / image_name)
        kind = rng.choice(["city", "founded"] if item_id < simple else ["country", "founder"])
        question, answer = QUESTIONS[kind]
        answer = str(getattr(company, answer))
        split = "simple" if item_id < simple else "hard"
        records.append({"id": item_id, "question": question, "answer": [answer], "image_path": image_name,
                        "split": split, "company": company.name, "kind": kind, "world_seed": seed + world,
                        "corpus": corpora[world]})
    questions = out / "mat_search_mini.json"
    questions.write_text(json.dumps(records, indent=1), encoding="utf-8")
    for companies, name in zip(all_companies, corpora):
        (out / name).write_text("".join(json.dumps(doc) + "\n" for doc in corpus_documents(companies)),
                                encoding="utf-8")
    if worlds > 1:
        (out / "corpus.jsonl").write_text((out / corpora[0]).read_text(encoding="utf-8"), encoding="utf-8")
    return questions, out / "corpus.jsonl"
