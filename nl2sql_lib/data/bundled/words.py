"""Word lists the database builders draw realistic values from (names, places, goods, titles)."""

from __future__ import annotations

import datetime as _dt
import random

FIRST_NAMES = (
    "James Mary John Patricia Robert Jennifer Michael Linda David Elizabeth William Barbara "
    "Richard Susan Joseph Jessica Thomas Sarah Charles Karen Daniel Lisa Matthew Nancy Anthony "
    "Sandra Mark Ashley Steven Emily Paul Donna Andrew Michelle Joshua Carol Kevin Amanda Brian "
    "Melissa George Deborah Timothy Laura Ronald Rebecca Jason Sharon Ryan Cynthia Jacob Kathleen "
    "Aisha Wei Carlos Sofia Mateo Yuki Olga Ahmed Priya Lars Ingrid Diego Fatima Kenji Amara "
    "Lucas Chloe Noah Emma Liam Olivia Elena Marco Hana Tariq Nadia Omar Leila Pierre Camille"
).split()

LAST_NAMES = (
    "Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez Hernandez Lopez "
    "Gonzalez Wilson Anderson Thomas Taylor Moore Jackson Martin Lee Perez Thompson White Harris "
    "Sanchez Clark Ramirez Lewis Robinson Walker Young Allen King Wright Scott Torres Nguyen Hill "
    "Flores Green Adams Nelson Baker Hall Rivera Campbell Mitchell Carter Roberts Kim Chen Patel "
    "Schmidt Müller Rossi Dubois Kowalski Novak Tanaka Sato Silva Costa Ivanova Larsen Okafor "
    "Haddad Singh Cohen O'Brien Fischer Moreau Jensen Bianchi Yamamoto Park Lindqvist"
).split()

# (city, country)
CITIES = (
    ("New York", "USA"), ("Chicago", "USA"), ("Boston", "USA"), ("Seattle", "USA"),
    ("Austin", "USA"), ("Denver", "USA"), ("San Francisco", "USA"), ("Miami", "USA"),
    ("Toronto", "Canada"), ("Vancouver", "Canada"), ("Montreal", "Canada"),
    ("London", "UK"), ("Manchester", "UK"), ("Edinburgh", "UK"),
    ("Paris", "France"), ("Lyon", "France"), ("Berlin", "Germany"), ("Munich", "Germany"),
    ("Hamburg", "Germany"), ("Madrid", "Spain"), ("Barcelona", "Spain"), ("Rome", "Italy"),
    ("Milan", "Italy"), ("Amsterdam", "Netherlands"), ("Stockholm", "Sweden"),
    ("Oslo", "Norway"), ("Copenhagen", "Denmark"), ("Warsaw", "Poland"), ("Vienna", "Austria"),
    ("Zurich", "Switzerland"), ("Lisbon", "Portugal"), ("Dublin", "Ireland"),
    ("Tokyo", "Japan"), ("Osaka", "Japan"), ("Seoul", "South Korea"), ("Singapore", "Singapore"),
    ("Sydney", "Australia"), ("Melbourne", "Australia"), ("São Paulo", "Brazil"),
    ("Mexico City", "Mexico"), ("Mumbai", "India"), ("Cairo", "Egypt"), ("Lagos", "Nigeria"),
)

COUNTRIES = sorted({country for _, country in CITIES})

STREETS = (
    "Oak Street Maple Avenue Pine Road Cedar Lane Elm Street Birch Way Willow Drive Lake Road "
    "Hill Street Park Avenue River Road Church Lane Mill Street High Street King Street "
    "Queen Street Station Road Garden Lane Forest Drive Sunset Boulevard"
)
STREET_NAMES = [" ".join(pair) for pair in zip(STREETS.split()[::2], STREETS.split()[1::2])]

TITLE_ADJECTIVES = (
    "Silent Broken Hidden Last Golden Dark Lost Burning Frozen Crimson Distant Secret Endless "
    "Wild Quiet Shattered Forgotten Midnight Silver Hollow Bright Northern Savage Gentle Iron"
).split()
TITLE_NOUNS = (
    "River Garden Empire Horizon Shadow Kingdom Storm Harbor Mirror Ocean Forest Letter Station "
    "Promise Winter Summer Road Island Tower Voyage Crown Echo Fire Dream Frontier Memory"
).split()


def person(rng: random.Random) -> str:
    """A full name such as 'Maria Garcia'."""
    return f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"


def unique_people(rng: random.Random, count: int) -> list[str]:
    """``count`` distinct full names (so a name identifies one row in questions)."""
    seen: set[str] = set()
    names: list[str] = []
    while len(names) < count:
        name = person(rng)
        if name not in seen:
            seen.add(name)
            names.append(name)
    return names


def unique_titles(rng: random.Random, count: int, patterns: tuple[str, ...] = ()) -> list[str]:
    """``count`` distinct titles like 'The Silent River' or 'Echo of the Crown'."""
    patterns = patterns or ("The {a} {n}", "{a} {n}", "{n} of the {n2}", "The {n} and the {n2}",
                            "A {a} {n}", "{a} {n}s")
    seen: set[str] = set()
    titles: list[str] = []
    while len(titles) < count:
        pattern = rng.choice(patterns)
        nouns = rng.sample(TITLE_NOUNS, 2)
        title = pattern.format(a=rng.choice(TITLE_ADJECTIVES), n=nouns[0], n2=nouns[1])
        if title not in seen:
            seen.add(title)
            titles.append(title)
    return titles


def date_between(rng: random.Random, start: str, end: str) -> str:
    """An ISO date (YYYY-MM-DD) uniformly between two ISO dates, inclusive."""
    first = _dt.date.fromisoformat(start)
    last = _dt.date.fromisoformat(end)
    return (first + _dt.timedelta(days=rng.randint(0, (last - first).days))).isoformat()


def add_days(day: str, days: int) -> str:
    return (_dt.date.fromisoformat(day) + _dt.timedelta(days=days)).isoformat()


def weighted(rng: random.Random, options: dict[str, float]) -> str:
    """One key of ``options`` drawn with the given weights (gives realistic skew)."""
    return rng.choices(list(options), weights=list(options.values()))[0]


def money(rng: random.Random, low: float, high: float, skew: float = 1.0) -> float:
    """A price between low and high, skewed towards low when skew > 1, rounded to cents."""
    return round(low + (high - low) * rng.random() ** skew, 2)
