"""Bundled domains, part A: retail, university, hospital, library, flights.

Each builder creates its tables (primary and foreign keys declared) and fills them from the word
lists with a seeded ``random.Random``, always inserting in the same order so the file bytes are
reproducible. ``ANNOTATIONS`` give the question generator nicer nouns, phrasing, thresholds with
evidence, and code meanings.
"""

from __future__ import annotations

import random
import sqlite3

from . import words as W
from .schema_info import Annotation as A
from .schema_info import Measure as M


def _insert(conn: sqlite3.Connection, table: str, rows: list[tuple]) -> None:
    marks = ", ".join("?" * len(rows[0]))
    conn.executemany(f"INSERT INTO {table} VALUES ({marks})", rows)


# ---------------------------------------------------------------- retail
def build_retail(conn: sqlite3.Connection, rng: random.Random) -> None:
    conn.executescript("""
    CREATE TABLE customers (customer_id INTEGER PRIMARY KEY, name TEXT NOT NULL, city TEXT,
        country TEXT, segment TEXT, signup_date TEXT);
    CREATE TABLE products (product_id INTEGER PRIMARY KEY, product_name TEXT NOT NULL,
        category TEXT, brand TEXT, price REAL, stock INTEGER);
    CREATE TABLE orders (order_id INTEGER PRIMARY KEY,
        customer_id INTEGER REFERENCES customers(customer_id), order_date TEXT, status TEXT,
        ship_mode TEXT);
    CREATE TABLE order_items (item_id INTEGER PRIMARY KEY,
        order_id INTEGER REFERENCES orders(order_id),
        product_id INTEGER REFERENCES products(product_id), quantity INTEGER, discount REAL);
    """)
    people = W.unique_people(rng, 450)
    customers = []
    for i, name in enumerate(people, 1):
        city, country = rng.choice(W.CITIES)
        customers.append((i, name, city, country,
                          W.weighted(rng, {"Consumer": 5, "Corporate": 3, "Home Office": 2}),
                          W.date_between(rng, "2018-01-01", "2023-06-30")))
    _insert(conn, "customers", customers)
    catalog = {
        "Electronics": (["Headphones", "Speaker", "Monitor", "Keyboard", "Mouse", "Tablet", "Camera"], 20, 1500),
        "Furniture": (["Desk", "Chair", "Bookcase", "Lamp", "Sofa", "Cabinet"], 40, 1200),
        "Clothing": (["Jacket", "Sweater", "Jeans", "Sneakers", "Scarf", "T-Shirt"], 8, 250),
        "Kitchen": (["Blender", "Kettle", "Toaster", "Pan Set", "Knife Set", "Coffee Maker"], 10, 400),
        "Sports": (["Yoga Mat", "Tennis Racket", "Bicycle", "Dumbbells", "Running Shoes"], 10, 900),
        "Toys": (["Puzzle", "Board Game", "Doll House", "Robot Kit", "Building Blocks"], 5, 150),
        "Books": (["Cookbook", "Atlas", "Novel Box Set", "Travel Guide", "Comic Collection"], 5, 80),
    }
    brands = ["Acme", "Nordic", "Vertex", "Lumen", "Orbit", "Sterling", "Kobo", "Zenith", "Harbor", "Pico"]
    products, seen = [], set()
    while len(products) < 260:
        category = rng.choice(sorted(catalog))
        items, low, high = catalog[category]
        brand = rng.choice(brands)
        name = f"{brand} {rng.choice(items)} {rng.choice(['Pro', 'Mini', 'Max', 'Lite', 'Plus', 'X', '2', '3', 'Classic', 'Air'])}"
        if name in seen:
            continue
        seen.add(name)
        products.append((len(products) + 1, name, category, brand, W.money(rng, low, high, 1.6),
                         rng.randint(0, 400)))
    _insert(conn, "products", products)
    orders, items = [], []
    for order_id in range(1, 2201):
        date = W.date_between(rng, "2020-01-01", "2024-12-31")
        orders.append((order_id, rng.randint(1, len(customers)), date,
                       W.weighted(rng, {"delivered": 70, "shipped": 10, "cancelled": 8, "returned": 5, "pending": 7}),
                       W.weighted(rng, {"Standard": 6, "Express": 3, "Same Day": 1})))
        for _ in range(rng.randint(1, 4)):
            items.append((len(items) + 1, order_id, rng.randint(1, len(products)), rng.randint(1, 6),
                          rng.choice([0.0, 0.0, 0.0, 0.05, 0.1, 0.15, 0.2])))
    _insert(conn, "orders", orders)
    _insert(conn, "order_items", items)


RETAIL = {
    "customers": A(plurals=("customers", "clients", "shoppers"), label="name", columns={
        "city": {"forms": ("from {v}", "living in {v}", "based in {v}")},
        "country": {"forms": ("from {v}", "located in {v}")},
        "segment": {"forms": ("in the {v} segment", "belonging to the {v} segment")},
        "signup_date": {"phrase": "sign-up date", "forms": ("who signed up in {v}", "registered in {v}")},
    }),
    "products": A(plurals=("products", "items in the catalog"), label="product_name", columns={
        "product_name": {"phrase": "name"},
        "category": {"forms": ("in the {v} category", "of category {v}")},
        "brand": {"forms": ("made by {v}", "from the brand {v}", "of brand {v}")},
        "price": {"unit": "dollars", "thresholds": (("expensive", ">", 500), ("cheap", "<", 20),
                                                    ("premium", ">", 1000))},
        "stock": {"phrase": "units in stock", "thresholds": (("out-of-stock", "=", 0),
                                                             ("low-stock", "<", 10))},
    }),
    "orders": A(plurals=("orders", "purchases"), columns={
        "order_date": {"phrase": "order date", "forms": ("placed in {v}", "made in {v}")},
        "status": {"forms": ("with status {v}", "whose status is {v}", "that are {v}")},
        "ship_mode": {"phrase": "shipping mode", "forms": ("shipped by {v}", "using {v} shipping")},
    }, verbs={"customer_id": "placed by"}),
    "order_items": A(singular="order line", plurals=("order lines", "order items", "line items"), columns={
        "quantity": {"thresholds": (("bulk", ">=", 5),)},
        "discount": {"phrase": "discount rate", "thresholds": (("discounted", ">", 0),)},
    }, verbs={"order_id": "belonging to", "product_id": "for"}),
}


# ---------------------------------------------------------------- university
def build_university(conn: sqlite3.Connection, rng: random.Random) -> None:
    conn.executescript("""
    CREATE TABLE departments (dept_id INTEGER PRIMARY KEY, dept_name TEXT NOT NULL, building TEXT,
        budget REAL, founded_year INTEGER);
    CREATE TABLE instructors (instructor_id INTEGER PRIMARY KEY, name TEXT NOT NULL,
        dept_id INTEGER REFERENCES departments(dept_id), rank TEXT, salary INTEGER, hire_date TEXT);
    CREATE TABLE students (student_id INTEGER PRIMARY KEY, name TEXT NOT NULL,
        dept_id INTEGER REFERENCES departments(dept_id), gender TEXT, enrollment_year INTEGER,
        gpa REAL, home_city TEXT);
    CREATE TABLE courses (course_id INTEGER PRIMARY KEY, title TEXT NOT NULL,
        dept_id INTEGER REFERENCES departments(dept_id),
        instructor_id INTEGER REFERENCES instructors(instructor_id), credits INTEGER, level TEXT);
    CREATE TABLE enrollments (enrollment_id INTEGER PRIMARY KEY,
        student_id INTEGER REFERENCES students(student_id),
        course_id INTEGER REFERENCES courses(course_id), semester TEXT, grade TEXT);
    """)
    depts = ["Computer Science", "Mathematics", "Physics", "Chemistry", "Biology", "History",
             "Economics", "Philosophy", "Psychology", "Linguistics", "Mechanical Engineering", "Music"]
    buildings = ["Turing Hall", "Newton Building", "Curie Center", "Darwin Hall", "Adams House", "Hume Tower"]
    _insert(conn, "departments", [(i, d, rng.choice(buildings), float(rng.randint(8, 90) * 25000),
                                   rng.randint(1890, 1995)) for i, d in enumerate(depts, 1)])
    names = W.unique_people(rng, 1300)
    ranks = {"Professor": (120000, 210000), "Associate Professor": (95000, 140000),
             "Assistant Professor": (80000, 110000), "Lecturer": (55000, 80000)}
    instructors = []
    for i in range(1, 121):
        rank = W.weighted(rng, {"Professor": 3, "Associate Professor": 3, "Assistant Professor": 3, "Lecturer": 2})
        low, high = ranks[rank]
        instructors.append((i, names[i - 1], rng.randint(1, len(depts)), rank,
                            rng.randint(low // 100, high // 100) * 100,
                            W.date_between(rng, "1995-01-01", "2023-08-31")))
    _insert(conn, "instructors", instructors)
    students = []
    for i in range(1, 1101):
        city, _ = rng.choice(W.CITIES)
        students.append((i, names[120 + i - 1], rng.randint(1, len(depts)), rng.choice(["F", "M"]),
                         rng.randint(2019, 2024), round(min(4.0, max(1.5, rng.gauss(3.1, 0.45))), 2), city))
    _insert(conn, "students", students)
    topics = {"Computer Science": ["Algorithms", "Databases", "Operating Systems", "Machine Learning", "Compilers"],
              "Mathematics": ["Calculus", "Linear Algebra", "Topology", "Number Theory", "Statistics"],
              "Physics": ["Mechanics", "Quantum Physics", "Optics", "Thermodynamics"],
              "Chemistry": ["Organic Chemistry", "Biochemistry", "Physical Chemistry"],
              "Biology": ["Genetics", "Ecology", "Cell Biology", "Microbiology"],
              "History": ["Ancient History", "Modern Europe", "World Wars", "History of Science"],
              "Economics": ["Microeconomics", "Macroeconomics", "Econometrics", "Game Theory"],
              "Philosophy": ["Ethics", "Logic", "Philosophy of Mind"],
              "Psychology": ["Cognitive Psychology", "Social Psychology", "Neuroscience"],
              "Linguistics": ["Syntax", "Phonetics", "Semantics"],
              "Mechanical Engineering": ["Fluid Dynamics", "Robotics", "Materials Science"],
              "Music": ["Music Theory", "Composition", "Jazz History"]}
    courses = []
    for d, dept in enumerate(depts, 1):
        dept_staff = [r[0] for r in instructors if r[2] == d] or [rng.randint(1, 120)]
        for topic in topics[dept]:
            for level, prefix in (("introductory", "Introduction to"), ("advanced", "Advanced")):
                courses.append((len(courses) + 1, f"{prefix} {topic}", d, rng.choice(dept_staff),
                                rng.choice([2, 3, 3, 4, 5]), level))
            if rng.random() < 0.5:
                courses.append((len(courses) + 1, f"Seminar in {topic}", d, rng.choice(dept_staff),
                                2, "intermediate"))
    _insert(conn, "courses", courses)
    enrollments = []
    semesters = ["Fall 2022", "Spring 2023", "Fall 2023", "Spring 2024", "Fall 2024"]
    for sid in range(1, 1101):
        for cid in sorted(rng.sample(range(1, len(courses) + 1), rng.randint(2, 6))):
            enrollments.append((len(enrollments) + 1, sid, cid, rng.choice(semesters),
                                W.weighted(rng, {"A": 30, "B": 35, "C": 20, "D": 8, "F": 7})))
    _insert(conn, "enrollments", enrollments)


UNIVERSITY = {
    "departments": A(plurals=("departments",), label="dept_name", columns={
        "dept_name": {"phrase": "name"}, "founded_year": {"phrase": "founding year"},
        "budget": {"unit": "dollars", "thresholds": (("well-funded", ">", 1500000),)},
        "building": {"forms": ("housed in {v}", "located in {v}")},
    }),
    "instructors": A(plurals=("instructors", "faculty members", "teachers"), label="name", columns={
        "rank": {"phrase": "academic rank", "forms": ("with the rank of {v}", "who are {v}s")},
        "salary": {"unit": "dollars", "thresholds": (("highly paid", ">", 150000),)},
        "hire_date": {"phrase": "hire date", "forms": ("hired in {v}",)},
    }, verbs={"dept_id": "in"}),
    "students": A(plurals=("students",), label="name", columns={
        "gender": {"value_words": {"F": "female", "M": "male"}, "word_forms": ("who are {v}",)},
        "enrollment_year": {"phrase": "year of enrollment"},
        "gpa": {"phrase": "GPA", "thresholds": (("honors", ">=", 3.5), ("struggling", "<", 2.0))},
        "home_city": {"phrase": "home city", "forms": ("from {v}", "whose home town is {v}")},
    }, verbs={"dept_id": "majoring in"}),
    "courses": A(plurals=("courses", "classes"), label="title", columns={
        "credits": {"phrase": "credit count"},
        "level": {"forms": ("at the {v} level", "that are {v}")},
    }, verbs={"dept_id": "offered by", "instructor_id": "taught by"}),
    "enrollments": A(plurals=("enrollments", "course registrations"), columns={
        "semester": {"forms": ("in {v}", "during the {v} semester")},
        "grade": {"value_words": {"F": "failing"}, "word_forms": ("with a {v} grade",),
                  "forms": ("with grade {v}", "graded {v}")},
    }, verbs={"student_id": "of", "course_id": "in"}),
}


# ---------------------------------------------------------------- hospital
def build_hospital(conn: sqlite3.Connection, rng: random.Random) -> None:
    conn.executescript("""
    CREATE TABLE departments (department_id INTEGER PRIMARY KEY, name TEXT NOT NULL, floor INTEGER,
        phone_extension TEXT);
    CREATE TABLE doctors (doctor_id INTEGER PRIMARY KEY, name TEXT NOT NULL,
        department_id INTEGER REFERENCES departments(department_id), specialty TEXT,
        years_experience INTEGER, consultation_fee REAL);
    CREATE TABLE patients (patient_id INTEGER PRIMARY KEY, name TEXT NOT NULL, gender TEXT,
        birth_date TEXT, city TEXT, blood_type TEXT, insurance TEXT);
    CREATE TABLE appointments (appointment_id INTEGER PRIMARY KEY,
        patient_id INTEGER REFERENCES patients(patient_id),
        doctor_id INTEGER REFERENCES doctors(doctor_id), appointment_date TEXT, reason TEXT,
        status TEXT, billed_amount REAL);
    CREATE TABLE prescriptions (prescription_id INTEGER PRIMARY KEY,
        appointment_id INTEGER REFERENCES appointments(appointment_id), drug_name TEXT,
        dosage_mg INTEGER, duration_days INTEGER);
    """)
    departments = {"Cardiology": ["Cardiologist", "Cardiac Surgeon"], "Neurology": ["Neurologist"],
                   "Pediatrics": ["Pediatrician", "Neonatologist"], "Orthopedics": ["Orthopedic Surgeon", "Sports Medicine"],
                   "Oncology": ["Oncologist", "Radiation Oncologist"], "Dermatology": ["Dermatologist"],
                   "Emergency": ["Emergency Physician"], "Psychiatry": ["Psychiatrist"],
                   "General Medicine": ["General Practitioner", "Internist"]}
    names = sorted(departments)
    _insert(conn, "departments", [(i, d, rng.randint(1, 8), f"x{rng.randint(100, 999)}") for i, d in enumerate(names, 1)])
    people = W.unique_people(rng, 1100)
    doctors = []
    for i in range(1, 81):
        dept = rng.randint(1, len(names))
        doctors.append((i, "Dr. " + people[i - 1], dept, rng.choice(departments[names[dept - 1]]),
                        rng.randint(1, 38), float(rng.randint(8, 45) * 5)))
    _insert(conn, "doctors", doctors)
    patients = []
    for i in range(1, 1001):
        city, _ = rng.choice(W.CITIES[:20])
        patients.append((i, people[80 + i - 1], rng.choice(["F", "M"]), W.date_between(rng, "1935-01-01", "2020-12-31"),
                         city, W.weighted(rng, {"O+": 38, "A+": 34, "B+": 9, "AB+": 3, "O-": 7, "A-": 6, "B-": 2, "AB-": 1}),
                         W.weighted(rng, {"public": 5, "private": 4, "none": 1})))
    _insert(conn, "patients", patients)
    reasons = ["check-up", "chest pain", "headache", "fracture", "skin rash", "fever", "follow-up",
               "back pain", "anxiety", "vaccination", "allergy", "shortness of breath"]
    drugs = {"Amoxicillin": (250, 500), "Ibuprofen": (200, 800), "Metformin": (500, 1000), "Lisinopril": (5, 40),
             "Atorvastatin": (10, 80), "Sertraline": (25, 200), "Omeprazole": (10, 40), "Prednisone": (5, 60),
             "Cetirizine": (5, 10), "Paracetamol": (500, 1000)}
    appointments, prescriptions = [], []
    for aid in range(1, 3001):
        doc = rng.randint(1, len(doctors))
        status = W.weighted(rng, {"completed": 80, "cancelled": 12, "no-show": 8})
        fee = doctors[doc - 1][5] * rng.choice([1, 1, 1.5, 2, 3]) if status == "completed" else 0.0
        appointments.append((aid, rng.randint(1, 1000), doc, W.date_between(rng, "2021-01-01", "2024-12-31"),
                             rng.choice(reasons), status, round(fee, 2)))
        if status == "completed":
            for _ in range(rng.choice([0, 0, 1, 1, 2])):
                drug = rng.choice(sorted(drugs))
                low, high = drugs[drug]
                prescriptions.append((len(prescriptions) + 1, aid, drug,
                                      rng.choice(sorted({low, (low + high) // 2, high})), rng.choice([3, 5, 7, 10, 14, 30, 90])))
    _insert(conn, "appointments", appointments)
    _insert(conn, "prescriptions", prescriptions)


HOSPITAL = {
    "departments": A(plurals=("departments", "wards"), label="name", columns={
        "phone_extension": {"kind": "text"}}),
    "doctors": A(plurals=("doctors", "physicians"), label="name", columns={
        "years_experience": {"phrase": "years of experience", "thresholds": (("senior", ">=", 20), ("junior", "<", 5))},
        "consultation_fee": {"phrase": "consultation fee", "unit": "dollars"},
        "specialty": {"forms": ("specializing as {v}", "whose specialty is {v}")},
    }, verbs={"department_id": "working in"}),
    "patients": A(plurals=("patients",), label="name", columns={
        "gender": {"value_words": {"F": "female", "M": "male"}, "word_forms": ("who are {v}",)},
        "birth_date": {"phrase": "birth date", "forms": ("born in {v}",)},
        "city": {"forms": ("from {v}", "living in {v}")},
        "blood_type": {"phrase": "blood type", "forms": ("with blood type {v}",)},
        "insurance": {"phrase": "insurance type", "value_words": {"none": "uninsured"},
                      "word_forms": ("who are {v}",), "forms": ("with {v} insurance", "insured by a {v} plan")},
    }),
    "appointments": A(plurals=("appointments", "visits"), columns={
        "appointment_date": {"phrase": "appointment date", "forms": ("scheduled in {v}", "that took place in {v}")},
        "reason": {"phrase": "reason for visit", "forms": ("for {v}", "due to {v}")},
        "status": {"value_words": {"no-show": "missed"}, "word_forms": ("that were {v}",),
                   "forms": ("that were {v}", "with status {v}")},
        "billed_amount": {"phrase": "billed amount", "unit": "dollars", "thresholds": (("costly", ">", 300),)},
    }, verbs={"patient_id": "of", "doctor_id": "with"}),
    "prescriptions": A(plurals=("prescriptions",), columns={
        "drug_name": {"phrase": "drug", "forms": ("for {v}", "of {v}")},
        "dosage_mg": {"phrase": "dosage", "unit": "mg", "thresholds": (("high-dose", ">=", 500),)},
        "duration_days": {"phrase": "duration in days", "thresholds": (("long-term", ">=", 30),)},
    }, verbs={"appointment_id": "issued at"}),
}


# ---------------------------------------------------------------- library
def build_library(conn: sqlite3.Connection, rng: random.Random) -> None:
    conn.executescript("""
    CREATE TABLE authors (author_id INTEGER PRIMARY KEY, name TEXT NOT NULL, nationality TEXT,
        birth_year INTEGER);
    CREATE TABLE books (book_id INTEGER PRIMARY KEY, title TEXT NOT NULL,
        author_id INTEGER REFERENCES authors(author_id), genre TEXT, publication_year INTEGER,
        pages INTEGER, language TEXT);
    CREATE TABLE members (member_id INTEGER PRIMARY KEY, name TEXT NOT NULL, city TEXT,
        membership_type TEXT, join_date TEXT);
    CREATE TABLE loans (loan_id INTEGER PRIMARY KEY, book_id INTEGER REFERENCES books(book_id),
        member_id INTEGER REFERENCES members(member_id), loan_date TEXT, due_date TEXT,
        return_date TEXT, late_fee REAL);
    """)
    people = W.unique_people(rng, 900)
    _insert(conn, "authors", [(i, people[i - 1], rng.choice(W.COUNTRIES), rng.randint(1920, 1995))
                              for i in range(1, 151)])
    titles = W.unique_titles(rng, 700)
    genres = {"Fiction": 5, "Mystery": 3, "Science Fiction": 2, "Fantasy": 2, "Biography": 1.5,
              "History": 1.5, "Romance": 2, "Poetry": 0.7, "Science": 1, "Children": 1.5}
    _insert(conn, "books", [(i, t, rng.randint(1, 150), W.weighted(rng, genres), rng.randint(1950, 2024),
                             rng.randint(90, 900), W.weighted(rng, {"English": 7, "Spanish": 1, "French": 1, "German": 1}))
                            for i, t in enumerate(titles, 1)])
    members = []
    for i in range(1, 601):
        city, _ = rng.choice(W.CITIES[:12])
        members.append((i, people[150 + i - 1], city,
                        W.weighted(rng, {"standard": 5, "student": 3, "senior": 2, "premium": 1}),
                        W.date_between(rng, "2015-01-01", "2024-06-30")))
    _insert(conn, "members", members)
    loans = []
    for lid in range(1, 3201):
        start = W.date_between(rng, "2021-01-01", "2024-12-15")
        due = W.add_days(start, 21)
        r = rng.random()
        if r < 0.08:
            returned, fee = None, 0.0
        elif r < 0.25:
            late = rng.randint(1, 40)
            returned, fee = W.add_days(due, late), round(late * 0.25, 2)
        else:
            returned, fee = W.add_days(start, rng.randint(1, 21)), 0.0
        loans.append((lid, rng.randint(1, len(titles)), rng.randint(1, 600), start, due, returned, fee))
    _insert(conn, "loans", loans)


LIBRARY = {
    "authors": A(plurals=("authors", "writers"), label="name", columns={
        "nationality": {"forms": ("from {v}", "of {v} nationality")},
        "birth_year": {"phrase": "birth year"}}),
    "books": A(plurals=("books", "titles"), label="title", columns={
        "genre": {"forms": ("in the {v} genre", "of genre {v}", "classified as {v}")},
        "publication_year": {"phrase": "publication year", "thresholds": (("recent", ">=", 2020), ("classic", "<", 1970))},
        "pages": {"phrase": "page count", "thresholds": (("long", ">", 600), ("short", "<", 150))},
        "language": {"forms": ("written in {v}", "in {v}")},
    }, verbs={"author_id": "written by"}),
    "members": A(plurals=("members", "library members", "patrons"), label="name", columns={
        "city": {"forms": ("from {v}", "living in {v}")},
        "membership_type": {"phrase": "membership type", "forms": ("with a {v} membership", "holding {v} memberships")},
        "join_date": {"phrase": "join date", "forms": ("who joined in {v}",)},
    }),
    "loans": A(plurals=("loans", "borrowings", "checkouts"), columns={
        "loan_date": {"phrase": "loan date", "forms": ("made in {v}", "borrowed in {v}")},
        "due_date": {"phrase": "due date"}, "return_date": {"phrase": "return date"},
        "late_fee": {"phrase": "late fee", "unit": "dollars", "thresholds": (("overdue", ">", 0),)},
    }, verbs={"book_id": "of", "member_id": "made by"}),
}


# ---------------------------------------------------------------- flights
def build_flights(conn: sqlite3.Connection, rng: random.Random) -> None:
    conn.executescript("""
    CREATE TABLE airlines (airline_id INTEGER PRIMARY KEY, name TEXT NOT NULL, country TEXT,
        alliance TEXT, founded_year INTEGER);
    CREATE TABLE airports (airport_code TEXT PRIMARY KEY, name TEXT NOT NULL, city TEXT, country TEXT,
        runways INTEGER);
    CREATE TABLE flights (flight_id INTEGER PRIMARY KEY, flight_number TEXT NOT NULL,
        airline_id INTEGER REFERENCES airlines(airline_id),
        origin TEXT REFERENCES airports(airport_code), destination TEXT REFERENCES airports(airport_code),
        departure_date TEXT, distance_km INTEGER, duration_min INTEGER, status TEXT);
    CREATE TABLE passengers (passenger_id INTEGER PRIMARY KEY, name TEXT NOT NULL, nationality TEXT,
        loyalty_tier TEXT, birth_year INTEGER);
    CREATE TABLE bookings (booking_id INTEGER PRIMARY KEY, flight_id INTEGER REFERENCES flights(flight_id),
        passenger_id INTEGER REFERENCES passengers(passenger_id), seat_class TEXT, price REAL,
        checked_bags INTEGER);
    """)
    airlines = [("SkyBridge Airways", "USA", "Star"), ("Northern Wings", "Norway", "SkyTeam"),
                ("Atlantic Air", "UK", "oneworld"), ("Aurora Airlines", "Canada", "Star"),
                ("Pacific Crest", "Japan", "oneworld"), ("Sol Iberia", "Spain", "SkyTeam"),
                ("Alpine Jet", "Switzerland", "Star"), ("Kestrel Air", "Germany", "none"),
                ("Southern Cross Air", "Australia", "oneworld"), ("Lusitania Airways", "Portugal", "none"),
                ("Blue Lotus Airlines", "Singapore", "Star"), ("Cóndor Andino", "Brazil", "SkyTeam")]
    _insert(conn, "airlines", [(i, n, c, a, rng.randint(1930, 2010)) for i, (n, c, a) in enumerate(airlines, 1)])
    codes = []
    for city, country in W.CITIES:
        code = (city.replace(" ", "").upper()[:2] + rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ"))
        while code in codes:
            code = code[:2] + rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
        codes.append(code)
    _insert(conn, "airports", [(code, f"{city} {rng.choice(['International', 'Central', 'Metropolitan'])} Airport",
                                city, country, rng.randint(1, 6)) for code, (city, country) in zip(codes, W.CITIES)])
    flights = []
    for fid in range(1, 1601):
        origin, destination = rng.sample(codes, 2)
        airline = rng.randint(1, len(airlines))
        distance = rng.randint(250, 14000)
        flights.append((fid, f"{airlines[airline - 1][0][:2].upper()}{rng.randint(100, 9999)}", airline, origin,
                        destination, W.date_between(rng, "2023-01-01", "2024-12-31"), distance,
                        int(distance / 13.5) + rng.randint(25, 60),
                        W.weighted(rng, {"on time": 70, "delayed": 22, "cancelled": 8})))
    _insert(conn, "flights", flights)
    people = W.unique_people(rng, 900)
    _insert(conn, "passengers", [(i, p, rng.choice(W.COUNTRIES), W.weighted(rng, {"none": 6, "silver": 2, "gold": 1.2, "platinum": 0.5}),
                                  rng.randint(1945, 2010)) for i, p in enumerate(people, 1)])
    bookings = []
    base = {"economy": 0.09, "premium economy": 0.16, "business": 0.4, "first": 0.75}
    for bid in range(1, 4001):
        fid = rng.randint(1, len(flights))
        cls = W.weighted(rng, {"economy": 70, "premium economy": 15, "business": 11, "first": 4})
        price = round(flights[fid - 1][6] * base[cls] * rng.uniform(0.7, 1.4) + 40, 2)
        bookings.append((bid, fid, rng.randint(1, len(people)), cls, price, rng.choice([0, 1, 1, 1, 2, 2, 3])))
    _insert(conn, "bookings", bookings)


FLIGHTS = {
    "airlines": A(plurals=("airlines", "carriers"), label="name", columns={
        "alliance": {"value_words": {"none": "unaligned"}, "word_forms": ("that are {v}",),
                     "forms": ("in the {v} alliance", "belonging to {v}")},
        "country": {"forms": ("based in {v}", "from {v}")},
        "founded_year": {"phrase": "founding year"}}),
    "airports": A(plurals=("airports",), label="name", columns={
        "city": {"forms": ("in {v}", "serving {v}")}, "country": {"forms": ("in {v}", "located in {v}")},
        "runways": {"phrase": "number of runways"}}),
    "flights": A(plurals=("flights",), label="flight_number", columns={
        "flight_number": {"phrase": "flight number"},
        "departure_date": {"phrase": "departure date", "forms": ("departing in {v}", "that flew in {v}")},
        "distance_km": {"phrase": "distance", "unit": "km", "thresholds": (("long-haul", ">", 4000), ("short-haul", "<", 1500))},
        "duration_min": {"phrase": "flight duration in minutes"},
        "status": {"forms": ("that were {v}", "with status {v}")},
    }, verbs={"airline_id": "operated by", "origin": "departing from", "destination": "arriving at"}),
    "passengers": A(plurals=("passengers", "travelers"), label="name", columns={
        "nationality": {"forms": ("from {v}", "with {v} nationality")},
        "loyalty_tier": {"phrase": "loyalty tier", "value_words": {"none": "non-member"},
                         "word_forms": ("who are {v}s",),
                         "forms": ("with {v} status", "in the {v} tier")},
        "birth_year": {"phrase": "birth year"}}),
    "bookings": A(plurals=("bookings", "reservations", "tickets"), columns={
        "seat_class": {"phrase": "seat class", "forms": ("in {v} class", "for {v} seats")},
        "price": {"phrase": "ticket price", "unit": "dollars", "thresholds": (("expensive", ">", 1000),)},
        "checked_bags": {"phrase": "number of checked bags"},
    }, verbs={"flight_id": "on", "passenger_id": "made by"}),
}


# ---------------------------------------------------------------- derived measures (challenging)
def _years(column: str, years: range) -> tuple[tuple[str, str], ...]:
    return tuple((f"strftime('%Y', {column}) = '{y}'", f"in {y}") for y in years)


_RETAIL_JOIN = ("order_items AS T1 INNER JOIN products AS T2 ON T1.product_id = T2.product_id "
                "INNER JOIN orders AS T3 ON T1.order_id = T3.order_id "
                "INNER JOIN customers AS T4 ON T3.customer_id = T4.customer_id")
RETAIL_MEASURES = [
    M("revenue", "T1.quantity * T2.price * (1 - T1.discount)", _RETAIL_JOIN,
      "revenue = quantity * price * (1 - discount)",
      groups=(("T2.category", "product category"), ("T2.brand", "brand"), ("T4.segment", "customer segment"),
              ("T4.country", "customer country"), ("T3.ship_mode", "shipping mode"), ("T4.city", "customer city")),
      filters=_years("T3.order_date", range(2020, 2025)) + (
          ("T3.status = 'delivered'", "from delivered orders"), ("T3.status = 'returned'", "lost to returned orders"),
          ("T4.segment = 'Corporate'", "from corporate customers")),
      per="order line"),
    M("units sold", "T1.quantity", _RETAIL_JOIN, "units sold refers to SUM(quantity)",
      groups=(("T2.category", "product category"), ("T2.product_name", "product"), ("T4.country", "customer country")),
      filters=_years("T3.order_date", range(2020, 2025))),
]

UNIVERSITY_MEASURES = [
    M("earned credits", "CASE WHEN T1.grade != 'F' THEN T2.credits ELSE 0 END",
      "enrollments AS T1 INNER JOIN courses AS T2 ON T1.course_id = T2.course_id "
      "INNER JOIN students AS T3 ON T1.student_id = T3.student_id "
      "INNER JOIN departments AS T4 ON T2.dept_id = T4.dept_id",
      "earned credits = credits of courses whose grade is not 'F'",
      groups=(("T4.dept_name", "course department"), ("T1.semester", "semester"), ("T3.home_city", "home city of the students"),
              ("T2.level", "course level")),
      filters=(("T1.semester = 'Fall 2023'", "in Fall 2023"), ("T3.gender = 'F'", "by female students"),
               ("T3.enrollment_year = 2022", "by students who enrolled in 2022")), per="enrollment"),
    M("salary cost", "T1.salary", "instructors AS T1 INNER JOIN departments AS T2 ON T1.dept_id = T2.dept_id",
      "salary cost refers to SUM(salary)",
      groups=(("T2.dept_name", "department"), ("T1.rank", "academic rank"), ("T2.building", "building")),
      filters=(("T1.rank = 'Professor'", "for full professors"),), per="instructor"),
]

HOSPITAL_MEASURES = [
    M("billed revenue", "T1.billed_amount",
      "appointments AS T1 INNER JOIN doctors AS T2 ON T1.doctor_id = T2.doctor_id "
      "INNER JOIN departments AS T3 ON T2.department_id = T3.department_id "
      "INNER JOIN patients AS T4 ON T1.patient_id = T4.patient_id",
      "billed revenue refers to SUM(billed_amount)",
      groups=(("T3.name", "department"), ("T2.specialty", "doctor specialty"), ("T1.reason", "reason for visit"),
              ("T4.insurance", "insurance type"), ("T4.city", "patient city")),
      filters=_years("T1.appointment_date", range(2021, 2025)) + (("T4.gender = 'F'", "from female patients"),),
      per="appointment"),
    M("prescribed medication days", "T1.duration_days",
      "prescriptions AS T1 INNER JOIN appointments AS T2 ON T1.appointment_id = T2.appointment_id "
      "INNER JOIN doctors AS T3 ON T2.doctor_id = T3.doctor_id",
      "prescribed medication days refers to SUM(duration_days)",
      groups=(("T1.drug_name", "drug"), ("T3.specialty", "prescribing doctor's specialty")),
      filters=_years("T2.appointment_date", range(2021, 2025)), per="prescription"),
]

LIBRARY_MEASURES = [
    M("late fees", "T1.late_fee",
      "loans AS T1 INNER JOIN members AS T2 ON T1.member_id = T2.member_id "
      "INNER JOIN books AS T3 ON T1.book_id = T3.book_id",
      "late fees refers to SUM(late_fee)",
      groups=(("T2.membership_type", "membership type"), ("T3.genre", "book genre"), ("T2.city", "member city"),
              ("T3.language", "book language")),
      filters=_years("T1.loan_date", range(2021, 2025)), per="loan"),
    M("loan days", "julianday(T1.return_date) - julianday(T1.loan_date)",
      "loans AS T1 INNER JOIN books AS T2 ON T1.book_id = T2.book_id "
      "INNER JOIN members AS T3 ON T1.member_id = T3.member_id",
      "loan days = julianday(return_date) - julianday(loan_date)",
      groups=(("T2.genre", "genre"), ("T3.membership_type", "membership type")),
      filters=(("T1.return_date IS NOT NULL", "for returned loans"),), per="loan"),
]

FLIGHTS_MEASURES = [
    M("ticket revenue", "T1.price",
      "bookings AS T1 INNER JOIN flights AS T2 ON T1.flight_id = T2.flight_id "
      "INNER JOIN airlines AS T3 ON T2.airline_id = T3.airline_id",
      "ticket revenue refers to SUM(price)",
      groups=(("T3.name", "airline"), ("T1.seat_class", "seat class"), ("T3.alliance", "alliance"),
              ("T2.status", "flight status"), ("T3.country", "airline country")),
      filters=_years("T2.departure_date", range(2023, 2025)) + (("T2.status = 'cancelled'", "on cancelled flights"),),
      per="booking"),
    M("flown kilometers", "T2.distance_km",
      "bookings AS T1 INNER JOIN flights AS T2 ON T1.flight_id = T2.flight_id "
      "INNER JOIN passengers AS T3 ON T1.passenger_id = T3.passenger_id",
      "flown kilometers refers to SUM(distance_km) over the passengers' bookings",
      groups=(("T3.loyalty_tier", "loyalty tier"), ("T3.nationality", "passenger nationality"), ("T1.seat_class", "seat class")),
      filters=(("T2.status != 'cancelled'", "excluding cancelled flights"),), per="booking"),
]
