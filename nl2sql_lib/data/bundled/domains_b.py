"""Bundled domains, part B: movies, football league, HR/company, music streaming, real estate."""

from __future__ import annotations

import random
import sqlite3

from . import words as W
from .domains_a import _insert, _years
from .schema_info import Annotation as A
from .schema_info import Measure as M


# ---------------------------------------------------------------- movies
def build_movies(conn: sqlite3.Connection, rng: random.Random) -> None:
    conn.executescript("""
    CREATE TABLE directors (director_id INTEGER PRIMARY KEY, name TEXT NOT NULL, nationality TEXT,
        birth_year INTEGER);
    CREATE TABLE movies (movie_id INTEGER PRIMARY KEY, title TEXT NOT NULL,
        director_id INTEGER REFERENCES directors(director_id), genre TEXT, release_year INTEGER,
        runtime_min INTEGER, budget_musd REAL, box_office_musd REAL, age_rating TEXT);
    CREATE TABLE actors (actor_id INTEGER PRIMARY KEY, name TEXT NOT NULL, gender TEXT,
        birth_year INTEGER, nationality TEXT);
    CREATE TABLE casting (cast_id INTEGER PRIMARY KEY, movie_id INTEGER REFERENCES movies(movie_id),
        actor_id INTEGER REFERENCES actors(actor_id), role_type TEXT, character_name TEXT);
    CREATE TABLE reviews (review_id INTEGER PRIMARY KEY, movie_id INTEGER REFERENCES movies(movie_id),
        critic TEXT, score INTEGER, review_date TEXT);
    """)
    people = W.unique_people(rng, 800)
    _insert(conn, "directors", [(i, people[i - 1], rng.choice(W.COUNTRIES), rng.randint(1940, 1990))
                                for i in range(1, 91)])
    genres = {"Drama": 5, "Comedy": 4, "Action": 3, "Thriller": 2.5, "Horror": 1.5, "Science Fiction": 1.5,
              "Animation": 1, "Documentary": 1, "Romance": 2}
    movies = []
    for i, title in enumerate(W.unique_titles(rng, 650), 1):
        budget = round(rng.uniform(0.5, 1) * rng.choice([2, 5, 15, 40, 90, 200]), 1)
        movies.append((i, title, rng.randint(1, 90), W.weighted(rng, genres), rng.randint(1975, 2024),
                       rng.randint(78, 185), budget, round(budget * rng.uniform(0.1, 6), 1),
                       W.weighted(rng, {"G": 1, "PG": 2, "PG-13": 4, "R": 3})))
    _insert(conn, "movies", movies)
    _insert(conn, "actors", [(i, people[90 + i - 1], rng.choice(["F", "M"]), rng.randint(1940, 2005),
                              rng.choice(W.COUNTRIES)) for i in range(1, 501)])
    roles = ["Detective", "Captain", "Doctor", "Queen", "Stranger", "Teacher", "Pilot", "Mayor", "Spy", "Chef"]
    casting = []
    for mid in range(1, len(movies) + 1):
        for order, aid in enumerate(sorted(rng.sample(range(1, 501), rng.randint(3, 6)))):
            casting.append((len(casting) + 1, mid, aid, "lead" if order < 1 else rng.choice(["supporting", "supporting", "cameo"]),
                            f"{rng.choice(roles)} {rng.choice(W.LAST_NAMES)}"))
    _insert(conn, "casting", casting)
    critics = ["The Daily Reel", "Screen Weekly", "Film Monthly", "CineView", "Popcorn Post", "The Critic's Cut"]
    _insert(conn, "reviews", [(i, rng.randint(1, len(movies)), rng.choice(critics), rng.randint(1, 10),
                               W.date_between(rng, "2015-01-01", "2024-12-31")) for i in range(1, 2201)])


MOVIES = {
    "directors": A(plurals=("directors", "filmmakers"), label="name", columns={
        "nationality": {"forms": ("from {v}",)}, "birth_year": {"phrase": "birth year"}}),
    "movies": A(singular="movie", plurals=("movies", "films"), label="title", columns={
        "genre": {"forms": ("in the {v} genre", "of genre {v}")},
        "release_year": {"phrase": "release year", "thresholds": (("recent", ">=", 2015), ("older", "<", 1990))},
        "runtime_min": {"phrase": "runtime in minutes", "thresholds": (("long", ">", 150),)},
        "budget_musd": {"phrase": "budget in millions of dollars", "thresholds": (("big-budget", ">", 100), ("low-budget", "<", 5))},
        "box_office_musd": {"phrase": "box office in millions of dollars", "thresholds": (("blockbuster", ">", 300),)},
        "age_rating": {"phrase": "age rating", "forms": ("rated {v}",)},
    }, verbs={"director_id": "directed by"}),
    "actors": A(plurals=("actors", "performers"), label="name", columns={
        "gender": {"value_words": {"F": "female", "M": "male"}, "word_forms": ("who are {v}",)},
        "birth_year": {"phrase": "birth year"}, "nationality": {"forms": ("from {v}",)}}),
    "casting": A(singular="casting credit", plurals=("casting credits", "roles"), label="character_name",
                 label_names_row=False, columns={
        "role_type": {"phrase": "role type", "forms": ("that are {v} roles", "of type {v}")},
        "character_name": {"phrase": "character name"},
    }, verbs={"movie_id": "in", "actor_id": "played by"}),
    "reviews": A(plurals=("reviews", "critic reviews"), columns={
        "critic": {"forms": ("by {v}", "published by {v}")},
        "score": {"thresholds": (("positive", ">=", 7), ("negative", "<=", 3))},
        "review_date": {"phrase": "review date", "forms": ("written in {v}",)},
    }, verbs={"movie_id": "of"}),
}


# ---------------------------------------------------------------- football league
def build_football(conn: sqlite3.Connection, rng: random.Random) -> None:
    conn.executescript("""
    CREATE TABLE teams (team_id INTEGER PRIMARY KEY, name TEXT NOT NULL, city TEXT, stadium TEXT,
        founded_year INTEGER, stadium_capacity INTEGER);
    CREATE TABLE players (player_id INTEGER PRIMARY KEY, name TEXT NOT NULL,
        team_id INTEGER REFERENCES teams(team_id), position TEXT, nationality TEXT, birth_date TEXT,
        market_value_meur REAL, shirt_number INTEGER);
    CREATE TABLE matches (match_id INTEGER PRIMARY KEY, season TEXT, match_date TEXT,
        home_team_id INTEGER REFERENCES teams(team_id), away_team_id INTEGER REFERENCES teams(team_id),
        home_goals INTEGER, away_goals INTEGER, attendance INTEGER);
    CREATE TABLE goals (goal_id INTEGER PRIMARY KEY, match_id INTEGER REFERENCES matches(match_id),
        player_id INTEGER REFERENCES players(player_id), minute INTEGER, goal_type TEXT);
    """)
    suffix = ["United", "City", "Rovers", "Athletic", "FC", "Wanderers", "Albion", "Rangers"]
    teams, used = [], set()
    for city, _ in W.CITIES:
        if len(teams) == 18:
            break
        name = f"{city} {rng.choice(suffix)}"
        if name in used:
            continue
        used.add(name)
        teams.append((len(teams) + 1, name, city, f"{rng.choice(W.LAST_NAMES)} {rng.choice(['Park', 'Arena', 'Stadium', 'Ground'])}",
                      rng.randint(1875, 1960), rng.randint(12, 80) * 1000))
    _insert(conn, "teams", teams)
    players = []
    for i, name in enumerate(W.unique_people(rng, 18 * 26), 1):
        team = (i - 1) // 26 + 1
        pos = W.weighted(rng, {"Goalkeeper": 3, "Defender": 9, "Midfielder": 9, "Forward": 5})
        players.append((i, name, team, pos, rng.choice(W.COUNTRIES), W.date_between(rng, "1988-01-01", "2006-12-31"),
                        round(rng.uniform(0.3, 1) ** 3 * 90, 1), (i - 1) % 26 + 1))
    _insert(conn, "players", players)
    by_team = {}
    for p in players:
        by_team.setdefault(p[2], []).append(p)
    matches, goals = [], []
    for season, start in (("2022/23", "2022-08-06"), ("2023/24", "2023-08-05")):
        day = 0
        for home in range(1, 19):
            for away in range(1, 19):
                if home == away:
                    continue
                mid = len(matches) + 1
                hg, ag = min(rng.choices(range(7), weights=[22, 32, 25, 12, 6, 2, 1])[0], 6), \
                    rng.choices(range(6), weights=[30, 33, 22, 10, 4, 1])[0]
                date = W.add_days(start, (day // 9) * 7 + rng.randint(0, 2))
                day += 1
                matches.append((mid, season, date, home, away, hg, ag, int(teams[home - 1][5] * rng.uniform(0.6, 1))))
                for team, count in ((home, hg), (away, ag)):
                    for _ in range(count):
                        scorer = rng.choice([p for p in by_team[team] if p[3] != "Goalkeeper"])
                        goals.append((len(goals) + 1, mid, scorer[0], rng.randint(1, 90),
                                      W.weighted(rng, {"open play": 70, "header": 14, "penalty": 10, "free kick": 4, "own goal": 2})))
    _insert(conn, "matches", matches)
    _insert(conn, "goals", goals)


FOOTBALL = {
    "teams": A(plurals=("teams", "clubs"), label="name", columns={
        "city": {"forms": ("from {v}", "based in {v}")}, "founded_year": {"phrase": "founding year"},
        "stadium": {"kind": "text"},
        "stadium_capacity": {"phrase": "stadium capacity", "thresholds": (("big-stadium", ">", 50000),)}}),
    "players": A(plurals=("players", "footballers"), label="name", columns={
        "position": {"forms": ("playing as {v}", "who are {v}s", "in the {v} position")},
        "nationality": {"forms": ("from {v}", "with {v} nationality")},
        "birth_date": {"phrase": "date of birth", "forms": ("born in {v}",)},
        "market_value_meur": {"phrase": "market value in million euros", "thresholds": (("star", ">", 50),)},
        "shirt_number": {"phrase": "shirt number"},
    }, verbs={"team_id": "playing for"}),
    "matches": A(plurals=("matches", "games", "fixtures"), columns={
        "season": {"forms": ("in the {v} season", "from season {v}")},
        "match_date": {"phrase": "match date", "forms": ("played in {v}",)},
        "home_goals": {"phrase": "home goals", "thresholds": (("high-scoring home", ">=", 4),)},
        "away_goals": {"phrase": "away goals"},
        "attendance": {"thresholds": (("sold-out", ">", 60000),)},
    }, verbs={"home_team_id": "hosted by", "away_team_id": "visited by"}),
    "goals": A(plurals=("goals",), columns={
        "minute": {"thresholds": (("late", ">", 80), ("early", "<", 10))},
        "goal_type": {"phrase": "goal type", "forms": ("scored from {v}", "of type {v}")},
    }, verbs={"match_id": "scored in", "player_id": "scored by"}),
}


# ---------------------------------------------------------------- HR / company
def build_hr(conn: sqlite3.Connection, rng: random.Random) -> None:
    conn.executescript("""
    CREATE TABLE departments (department_id INTEGER PRIMARY KEY, name TEXT NOT NULL, location_city TEXT,
        cost_center TEXT);
    CREATE TABLE employees (employee_id INTEGER PRIMARY KEY, name TEXT NOT NULL,
        department_id INTEGER REFERENCES departments(department_id), job_title TEXT, hire_date TEXT,
        salary INTEGER, gender TEXT, manager_id INTEGER REFERENCES employees(employee_id),
        remote INTEGER);
    CREATE TABLE projects (project_id INTEGER PRIMARY KEY, name TEXT NOT NULL,
        department_id INTEGER REFERENCES departments(department_id), start_date TEXT, budget REAL,
        status TEXT);
    CREATE TABLE assignments (assignment_id INTEGER PRIMARY KEY,
        employee_id INTEGER REFERENCES employees(employee_id),
        project_id INTEGER REFERENCES projects(project_id), role TEXT, hours_per_week INTEGER);
    """)
    depts = {"Engineering": ["Software Engineer", "Senior Engineer", "QA Analyst", "DevOps Engineer"],
             "Sales": ["Account Executive", "Sales Manager", "Sales Associate"],
             "Marketing": ["Marketing Specialist", "Content Writer", "Brand Manager"],
             "Finance": ["Accountant", "Financial Analyst", "Controller"],
             "Human Resources": ["HR Specialist", "Recruiter"],
             "Customer Support": ["Support Agent", "Support Lead"],
             "Legal": ["Counsel", "Paralegal"], "Operations": ["Operations Manager", "Logistics Coordinator"]}
    names = sorted(depts)
    _insert(conn, "departments", [(i, d, rng.choice(W.CITIES[:12])[0], f"CC-{100 + i * 7}") for i, d in enumerate(names, 1)])
    employees = []
    people = W.unique_people(rng, 900)
    for i in range(1, 901):
        d = rng.randint(1, len(names))
        title = rng.choice(depts[names[d - 1]])
        heads = [e[0] for e in employees if e[2] == d][:3]
        employees.append((i, people[i - 1], d, title, W.date_between(rng, "2008-01-01", "2024-09-30"),
                          rng.randint(420, 1900) * 100, rng.choice(["F", "M"]),
                          rng.choice(heads) if heads else None, int(rng.random() < 0.3)))
    _insert(conn, "employees", employees)
    projects = []
    for i, title in enumerate(W.unique_titles(rng, 140, ("Project {n}", "{a} {n} Initiative", "Operation {n}")), 1):
        projects.append((i, title, rng.randint(1, len(names)), W.date_between(rng, "2019-01-01", "2024-12-31"),
                         float(rng.randint(2, 400) * 5000), W.weighted(rng, {"active": 4, "completed": 4, "on hold": 1, "planned": 1})))
    _insert(conn, "projects", projects)
    assignments = []
    for eid in range(1, 901):
        for pid in sorted(rng.sample(range(1, len(projects) + 1), rng.randint(0, 3))):
            assignments.append((len(assignments) + 1, eid, pid, W.weighted(rng, {"contributor": 6, "lead": 1, "reviewer": 2, "advisor": 1}),
                                rng.choice([4, 8, 10, 16, 20, 24, 32, 40])))
    _insert(conn, "assignments", assignments)


HR = {
    "departments": A(plurals=("departments", "teams"), label="name", columns={
        "location_city": {"phrase": "location", "forms": ("located in {v}", "based in {v}")},
        "cost_center": {"phrase": "cost center", "kind": "text"}}),
    "employees": A(plurals=("employees", "staff members", "workers"), label="name", columns={
        "job_title": {"phrase": "job title", "forms": ("working as {v}", "with the title {v}")},
        "hire_date": {"phrase": "hire date", "forms": ("hired in {v}", "who joined in {v}")},
        "salary": {"unit": "dollars", "thresholds": (("high earner", ">", 150000), ("low-paid", "<", 50000))},
        "gender": {"value_words": {"F": "female", "M": "male"}, "word_forms": ("who are {v}",)},
        "remote": {"phrase": "remote flag", "value_words": {1: "remotely", 0: "from the office"},
                   "word_forms": ("who work {v}",)},
    }, verbs={"department_id": "working in", "manager_id": "managed by"}),
    "projects": A(plurals=("projects",), label="name", columns={
        "start_date": {"phrase": "start date", "forms": ("started in {v}", "launched in {v}")},
        "budget": {"unit": "dollars", "thresholds": (("large", ">", 1000000),)},
        "status": {"value_words": {"on hold": "paused"}, "word_forms": ("that are {v}",),
                   "forms": ("that are {v}", "with status {v}")},
    }, verbs={"department_id": "run by"}),
    "assignments": A(plurals=("assignments", "project assignments"), columns={
        "role": {"forms": ("as {v}", "in the {v} role")},
        "hours_per_week": {"phrase": "weekly hours", "thresholds": (("full-time", ">=", 32),)},
    }, verbs={"employee_id": "held by", "project_id": "on"}),
}


# ---------------------------------------------------------------- music streaming
def build_music(conn: sqlite3.Connection, rng: random.Random) -> None:
    conn.executescript("""
    CREATE TABLE artists (artist_id INTEGER PRIMARY KEY, name TEXT NOT NULL, country TEXT, genre TEXT,
        formed_year INTEGER);
    CREATE TABLE albums (album_id INTEGER PRIMARY KEY, title TEXT NOT NULL,
        artist_id INTEGER REFERENCES artists(artist_id), release_year INTEGER, record_label TEXT);
    CREATE TABLE tracks (track_id INTEGER PRIMARY KEY, title TEXT NOT NULL,
        album_id INTEGER REFERENCES albums(album_id), duration_sec INTEGER, explicit INTEGER, bpm INTEGER);
    CREATE TABLE users (user_id INTEGER PRIMARY KEY, username TEXT NOT NULL, country TEXT,
        subscription TEXT, signup_date TEXT, birth_year INTEGER);
    CREATE TABLE plays (play_id INTEGER PRIMARY KEY, user_id INTEGER REFERENCES users(user_id),
        track_id INTEGER REFERENCES tracks(track_id), played_on TEXT, seconds_played INTEGER, device TEXT);
    """)
    band_words = ["Velvet", "Neon", "Echo", "Paper", "Golden", "Static", "Lunar", "Wild", "Glass", "Crimson"]
    band_nouns = ["Foxes", "Tides", "Machines", "Hearts", "Owls", "Lights", "Rivers", "Giants", "Saints", "Wolves"]
    artists, seen = [], set()
    while len(artists) < 120:
        name = (f"The {rng.choice(band_words)} {rng.choice(band_nouns)}" if rng.random() < 0.55 else W.person(rng))
        if name in seen:
            continue
        seen.add(name)
        artists.append((len(artists) + 1, name, rng.choice(W.COUNTRIES),
                        W.weighted(rng, {"Pop": 4, "Rock": 3, "Hip-Hop": 3, "Electronic": 2, "Jazz": 1, "Classical": 1, "Country": 1.5, "Indie": 2}),
                        rng.randint(1965, 2020)))
    _insert(conn, "artists", artists)
    labels = ["Sunset Records", "Blue Note Works", "Atlas Music", "Indigo Sound", "Northstar", "Independent"]
    titles = W.unique_titles(rng, 1400)
    albums = [(i, titles[i - 1], rng.randint(1, 120), rng.randint(1975, 2024), rng.choice(labels)) for i in range(1, 331)]
    _insert(conn, "albums", albums)
    tracks = []
    for album in albums:
        for _ in range(rng.randint(3, 9)):
            tracks.append((len(tracks) + 1, titles[330 + len(tracks) % 1070] if rng.random() < 0.6 else
                           f"{rng.choice(W.TITLE_ADJECTIVES)} {rng.choice(W.TITLE_NOUNS)}",
                           album[0], rng.randint(95, 420), int(rng.random() < 0.18), rng.randint(60, 180)))
    _insert(conn, "tracks", tracks)
    users, seen = [], set()
    while len(users) < 700:
        handle = f"{rng.choice(W.FIRST_NAMES).lower()}{rng.choice(['_', '.', ''])}{rng.randint(1, 999)}"
        if handle in seen:
            continue
        seen.add(handle)
        users.append((len(users) + 1, handle, rng.choice(W.COUNTRIES),
                      W.weighted(rng, {"free": 5, "premium": 3, "family": 1.5, "student": 1.5}),
                      W.date_between(rng, "2016-01-01", "2024-10-31"), rng.randint(1955, 2008)))
    _insert(conn, "users", users)
    plays = []
    for pid in range(1, 5001):
        track = tracks[rng.randint(1, len(tracks)) - 1]
        plays.append((pid, rng.randint(1, len(users)), track[0], W.date_between(rng, "2024-01-01", "2024-12-31"),
                      track[3] if rng.random() < 0.6 else rng.randint(5, track[3]),
                      W.weighted(rng, {"mobile": 6, "desktop": 2, "smart speaker": 1, "tv": 0.5})))
    _insert(conn, "plays", plays)


MUSIC = {
    "artists": A(plurals=("artists", "musicians", "acts"), label="name", columns={
        "country": {"forms": ("from {v}", "based in {v}")},
        "genre": {"forms": ("playing {v}", "in the {v} genre")},
        "formed_year": {"phrase": "year formed"}}),
    "albums": A(plurals=("albums", "records"), label="title", columns={
        "release_year": {"phrase": "release year", "thresholds": (("new", ">=", 2022),)},
        "record_label": {"phrase": "record label", "forms": ("released on {v}", "on the label {v}")},
    }, verbs={"artist_id": "by"}),
    "tracks": A(plurals=("tracks", "songs"), label="title", columns={
        "duration_sec": {"phrase": "duration in seconds", "thresholds": (("long", ">", 360),)},
        "explicit": {"phrase": "explicit flag", "value_words": {1: "explicit", 0: "clean"},
                     "word_forms": ("that are {v}", "marked {v}")},
        "bpm": {"phrase": "tempo in BPM", "thresholds": (("fast", ">", 140),)},
    }, verbs={"album_id": "on"}),
    "users": A(plurals=("users", "listeners", "subscribers"), label="username", columns={
        "country": {"forms": ("from {v}", "in {v}")},
        "subscription": {"phrase": "subscription plan", "forms": ("on the {v} plan", "with a {v} subscription")},
        "signup_date": {"phrase": "sign-up date", "forms": ("who signed up in {v}",)},
        "birth_year": {"phrase": "birth year"}}),
    "plays": A(plurals=("plays", "streams", "listens"), columns={
        "played_on": {"phrase": "play date", "forms": ("on {v}",)},
        "seconds_played": {"phrase": "seconds played", "thresholds": (("skipped", "<", 30),)},
        "device": {"forms": ("on a {v}", "from a {v} device")},
    }, verbs={"user_id": "by", "track_id": "of"}),
}


# ---------------------------------------------------------------- real estate
def build_real_estate(conn: sqlite3.Connection, rng: random.Random) -> None:
    conn.executescript("""
    CREATE TABLE agencies (agency_id INTEGER PRIMARY KEY, name TEXT NOT NULL, city TEXT, commission_rate REAL);
    CREATE TABLE agents (agent_id INTEGER PRIMARY KEY, name TEXT NOT NULL,
        agency_id INTEGER REFERENCES agencies(agency_id), years_experience INTEGER, license_level TEXT);
    CREATE TABLE properties (property_id INTEGER PRIMARY KEY, address TEXT NOT NULL, city TEXT,
        property_type TEXT, bedrooms INTEGER, bathrooms INTEGER, area_sqm INTEGER, year_built INTEGER,
        list_price INTEGER, agent_id INTEGER REFERENCES agents(agent_id));
    CREATE TABLE sales (sale_id INTEGER PRIMARY KEY, property_id INTEGER REFERENCES properties(property_id),
        agent_id INTEGER REFERENCES agents(agent_id), buyer_name TEXT, sale_date TEXT, sale_price INTEGER,
        financing TEXT);
    CREATE TABLE viewings (viewing_id INTEGER PRIMARY KEY, property_id INTEGER REFERENCES properties(property_id),
        viewing_date TEXT, visitor_name TEXT, interest_level TEXT);
    """)
    cities = [c for c, country in W.CITIES if country in ("USA", "Canada")]
    agencies = [(i, f"{n} Realty", rng.choice(cities), rng.choice([0.02, 0.025, 0.03, 0.035]))
                for i, n in enumerate(["Keystone", "Bluebird", "Summit", "Harborview", "Oakridge", "Landmark",
                                       "Evergreen", "Cornerstone", "Prairie", "Lakeside"], 1)]
    _insert(conn, "agencies", agencies)
    people = W.unique_people(rng, 1400)
    _insert(conn, "agents", [(i, people[i - 1], rng.randint(1, len(agencies)), rng.randint(1, 30),
                              W.weighted(rng, {"associate": 5, "broker": 2, "managing broker": 1})) for i in range(1, 71)])
    kinds = {"apartment": (1, 3, 45, 120), "house": (2, 6, 110, 420), "townhouse": (2, 4, 90, 220),
             "condo": (1, 3, 50, 150), "studio": (0, 0, 22, 45)}
    props, used = [], set()
    while len(props) < 900:
        address = f"{rng.randint(1, 999)} {rng.choice(W.STREET_NAMES)}"
        city = rng.choice(cities)
        if (address, city) in used:
            continue
        used.add((address, city))
        kind = W.weighted(rng, {"apartment": 4, "house": 3, "townhouse": 1.5, "condo": 2, "studio": 1})
        bmin, bmax, amin, amax = kinds[kind]
        area = rng.randint(amin, amax)
        price = int(area * rng.randint(2500, 9000) / 1000) * 1000
        props.append((len(props) + 1, address, city, kind, rng.randint(bmin, bmax), max(1, rng.randint(bmin - 1, bmax)),
                      area, rng.randint(1900, 2024), price, rng.randint(1, 70)))
    _insert(conn, "properties", props)
    sales = []
    for prop in rng.sample(props, 520):
        sales.append((len(sales) + 1, prop[0], prop[9] if rng.random() < 0.8 else rng.randint(1, 70),
                      people[70 + len(sales)], W.date_between(rng, "2020-01-01", "2024-12-31"),
                      int(prop[8] * rng.uniform(0.88, 1.12) / 1000) * 1000,
                      W.weighted(rng, {"mortgage": 7, "cash": 2, "FHA loan": 1})))
    sales.sort(key=lambda s: s[0])
    _insert(conn, "sales", sales)
    _insert(conn, "viewings", [(i, rng.randint(1, len(props)), W.date_between(rng, "2020-01-01", "2024-12-31"),
                                people[600 + rng.randint(0, 799)], W.weighted(rng, {"low": 3, "medium": 4, "high": 2}))
                               for i in range(1, 2401)])


REAL_ESTATE = {
    "agencies": A(plurals=("agencies", "real estate agencies"), label="name", columns={
        "city": {"forms": ("based in {v}", "in {v}")},
        "commission_rate": {"phrase": "commission rate"}}),
    "agents": A(plurals=("agents", "realtors"), label="name", columns={
        "years_experience": {"phrase": "years of experience", "thresholds": (("veteran", ">=", 20), ("new", "<", 3))},
        "license_level": {"phrase": "license level", "forms": ("licensed as {v}", "at the {v} level")},
    }, verbs={"agency_id": "working for"}),
    "properties": A(plurals=("properties", "listings", "homes"), label="address", columns={
        "city": {"forms": ("in {v}", "located in {v}")},
        "property_type": {"phrase": "property type", "forms": ("of type {v}", "that are {v}s")},
        "area_sqm": {"phrase": "floor area in square meters", "thresholds": (("spacious", ">", 250), ("small", "<", 40))},
        "year_built": {"phrase": "construction year", "thresholds": (("historic", "<", 1930), ("new-build", ">=", 2020))},
        "list_price": {"phrase": "list price", "unit": "dollars", "thresholds": (("luxury", ">", 1500000), ("affordable", "<", 250000))},
    }, verbs={"agent_id": "listed by"}),
    "sales": A(plurals=("sales", "transactions"), label="buyer_name", label_names_row=False, columns={
        "buyer_name": {"phrase": "buyer name"},
        "sale_date": {"phrase": "sale date", "forms": ("closed in {v}", "completed in {v}")},
        "sale_price": {"phrase": "sale price", "unit": "dollars", "thresholds": (("million-dollar", ">=", 1000000),)},
        "financing": {"value_words": {"cash": "all-cash"}, "word_forms": ("that were {v}",),
                      "forms": ("financed with {v}", "paid by {v}")},
    }, verbs={"property_id": "of", "agent_id": "handled by"}),
    "viewings": A(plurals=("viewings", "showings"), label_names_row=False, columns={
        "viewing_date": {"phrase": "viewing date", "forms": ("held in {v}",)},
        "visitor_name": {"phrase": "visitor name", "kind": "text"},
        "interest_level": {"phrase": "interest level", "forms": ("with {v} interest",)},
    }, verbs={"property_id": "of"}),
}


# ---------------------------------------------------------------- derived measures (challenging)
MOVIES_MEASURES = [
    M("profit in millions of dollars", "T1.box_office_musd - T1.budget_musd",
      "movies AS T1 INNER JOIN directors AS T2 ON T1.director_id = T2.director_id",
      "profit = SUBTRACT(box_office_musd, budget_musd)",
      groups=(("T1.genre", "genre"), ("T2.name", "director"), ("T2.nationality", "director nationality"),
              ("T1.age_rating", "age rating"), ("T1.release_year", "release year")),
      filters=(("T1.release_year >= 2000", "for movies released since 2000"),
               ("T1.genre = 'Action'", "for action movies")), per="movie"),
    M("review points", "T1.score",
      "reviews AS T1 INNER JOIN movies AS T2 ON T1.movie_id = T2.movie_id",
      "review points refers to SUM(score)",
      groups=(("T1.critic", "critic"), ("T2.genre", "genre")),
      filters=_years("T1.review_date", range(2019, 2025)), per="review"),
]

FOOTBALL_MEASURES = [
    M("goals scored in home games", "T1.home_goals",
      "matches AS T1 INNER JOIN teams AS T2 ON T1.home_team_id = T2.team_id",
      "goals scored in home games refers to SUM(home_goals) of the home team",
      groups=(("T2.name", "home team"), ("T2.city", "city"), ("T1.season", "season")),
      filters=(("T1.season = '2022/23'", "in the 2022/23 season"), ("T1.season = '2023/24'", "in the 2023/24 season")),
      per="home match"),
    M("home wins", "CASE WHEN T1.home_goals > T1.away_goals THEN 1 ELSE 0 END",
      "matches AS T1 INNER JOIN teams AS T2 ON T1.home_team_id = T2.team_id",
      "home win refers to home_goals > away_goals",
      groups=(("T2.name", "team"), ("T1.season", "season")),
      filters=(("T1.season = '2022/23'", "in the 2022/23 season"), ("T1.season = '2023/24'", "in the 2023/24 season"))),
    M("away points", "CASE WHEN T1.away_goals > T1.home_goals THEN 3 WHEN T1.away_goals = T1.home_goals "
      "THEN 1 ELSE 0 END", "matches AS T1 INNER JOIN teams AS T2 ON T1.away_team_id = T2.team_id",
      "away points: a win is worth 3 points (away_goals > home_goals), a draw 1 (away_goals = home_goals)",
      groups=(("T2.name", "away team"), ("T1.season", "season")),
      filters=(("T1.season = '2022/23'", "in the 2022/23 season"), ("T1.season = '2023/24'", "in the 2023/24 season")),
      per="away match"),
]

HR_MEASURES = [
    M("payroll", "T1.salary", "employees AS T1 INNER JOIN departments AS T2 ON T1.department_id = T2.department_id",
      "payroll refers to SUM(salary)",
      groups=(("T2.name", "department"), ("T2.location_city", "office location"), ("T1.job_title", "job title")),
      filters=(("T1.remote = 1", "for remote employees"), ("T1.gender = 'F'", "for female employees"))
      + _years("T1.hire_date", range(2019, 2025)), per="employee"),
    M("weekly hours", "T1.hours_per_week",
      "assignments AS T1 INNER JOIN projects AS T2 ON T1.project_id = T2.project_id "
      "INNER JOIN employees AS T3 ON T1.employee_id = T3.employee_id",
      "weekly hours refers to SUM(hours_per_week)",
      groups=(("T2.name", "project"), ("T2.status", "project status"), ("T1.role", "role"), ("T3.job_title", "job title")),
      filters=(("T2.status = 'active'", "on active projects"), ("T1.role = 'lead'", "by project leads")),
      per="assignment"),
]

MUSIC_MEASURES = [
    M("listening hours", "T1.seconds_played / 3600.0",
      "plays AS T1 INNER JOIN tracks AS T2 ON T1.track_id = T2.track_id "
      "INNER JOIN albums AS T3 ON T2.album_id = T3.album_id "
      "INNER JOIN artists AS T4 ON T3.artist_id = T4.artist_id",
      "listening hours = DIVIDE(SUM(seconds_played), 3600)",
      groups=(("T4.name", "artist"), ("T4.genre", "genre"), ("T1.device", "device"), ("T3.record_label", "record label")),
      filters=(("T2.explicit = 1", "on explicit tracks"), ("strftime('%m', T1.played_on) = '12'", "in December"),
               ("T1.device = 'mobile'", "on mobile")), per="play"),
    M("full plays", "CASE WHEN T1.seconds_played = T2.duration_sec THEN 1 ELSE 0 END",
      "plays AS T1 INNER JOIN tracks AS T2 ON T1.track_id = T2.track_id "
      "INNER JOIN users AS T3 ON T1.user_id = T3.user_id",
      "full play refers to seconds_played = duration_sec",
      groups=(("T3.subscription", "subscription plan"), ("T3.country", "listener country"), ("T1.device", "device"))),
]

REAL_ESTATE_MEASURES = [
    M("commission", "T1.sale_price * T3.commission_rate",
      "sales AS T1 INNER JOIN agents AS T2 ON T1.agent_id = T2.agent_id "
      "INNER JOIN agencies AS T3 ON T2.agency_id = T3.agency_id",
      "commission = MULTIPLY(sale_price, commission_rate)",
      groups=(("T3.name", "agency"), ("T2.name", "agent"), ("T1.financing", "financing type"),
              ("T2.license_level", "license level")),
      filters=_years("T1.sale_date", range(2020, 2025)), per="sale"),
    M("discount below list price", "T2.list_price - T1.sale_price",
      "sales AS T1 INNER JOIN properties AS T2 ON T1.property_id = T2.property_id",
      "discount below list price = SUBTRACT(list_price, sale_price)",
      groups=(("T2.city", "city"), ("T2.property_type", "property type")),
      filters=_years("T1.sale_date", range(2020, 2025)), per="sale"),
]
