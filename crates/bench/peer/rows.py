"""The rows of the bench's results, the same as crates/bench/src/rows.rs."""

CITIES = ["Paris", "Kyoto", "Lisbon", "Montréal", "Cape Town", "Reykjavík", "Lima", "Hanoi"]
COLUMNS = ["hotelId", "name", "city", "score", "rooms", "open"]


def row(i):
    return {
        "hotelId": f"H-{i}",
        "name": f"Hotel {i}",
        "city": CITIES[i % len(CITIES)],
        "score": (i % 91) / 10.0 + 1.0,
        "rooms": 10 + i % 490,
        "open": i % 7 != 0,
    }
