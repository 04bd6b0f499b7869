"""Generate the synthetic fraud-detection example ``fraud.csv`` (described by
``fraud-schema.yaml``).

Each row is a card payment with a made-up but plausible fraud mechanism: fraud is more likely
for large amounts relative to the account's 30-day average, at night, for new accounts, for
far-away deliveries, on the web channel and with high shipping. The rows satisfy the schema's
relations: ``amount <= credit_limit``, ``total == amount + shipping`` and
``amount <= 250 * n_items``.

Run from the project root: ``python examples/data/make_fraud.py`` (seeded; the output is
identical on every run).
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

COUNTRIES = ["US", "GB", "DE", "FR", "NG", "BR"]
CHANNELS = ["web", "app", "phone"]


def make_rows(n: int, seed: int) -> list[dict[str, object]]:
    """``n`` payment rows as dicts keyed by column name, from a seeded generator."""
    rng = np.random.default_rng(seed)
    age = rng.integers(0, 3651, n)
    country = rng.choice(len(COUNTRIES), n, p=[0.35, 0.2, 0.15, 0.15, 0.07, 0.08])
    channel = rng.choice(len(CHANNELS), n, p=[0.5, 0.4, 0.1])
    avg30 = np.round(np.clip(rng.lognormal(4.5, 0.8, n), 1, 5000), 2)
    limit = np.round(np.clip(rng.lognormal(8.0, 0.6, n), 100, 10000), 2)
    ratio = rng.lognormal(0.0, 0.7, n)
    amount = np.round(np.minimum(np.clip(avg30 * ratio, 1, 5000), limit), 2)
    n_items = np.clip(np.ceil(amount / 250) + rng.integers(0, 4, n), 1, 30).astype(int)
    hour = rng.integers(0, 24, n)
    distance = np.round(np.clip(rng.exponential(300, n), 0, 5000), 1)
    shipping = np.round(np.clip(rng.gamma(2.0, 8.0, n), 0, 100), 2)
    total = np.round(amount + shipping, 2)
    night = (hour < 6) | (hour >= 23)
    logit = (
        -8.5
        + 5.0 * np.log(amount / avg30)
        + 4.0 * night
        + 5.0 * (age < 60)
        + 0.005 * distance
        + 3.0 * np.isin(country, [4, 5])
        + 2.0 * (channel == 0)
        + 0.08 * shipping
    )
    fraud = rng.random(n) < 1 / (1 + np.exp(-logit))
    rows = []
    for i in range(n):
        rows.append(
            {
                "amount": f"{amount[i]:.2f}",
                "shipping": f"{shipping[i]:.2f}",
                "total": f"{total[i]:.2f}",
                "credit_limit": f"{limit[i]:.2f}",
                "n_items": int(n_items[i]),
                "hour": int(hour[i]),
                "distance_km": f"{distance[i]:.1f}",
                "avg_amount_30d": f"{avg30[i]:.2f}",
                "account_age_days": int(age[i]),
                "country": COUNTRIES[int(country[i])],
                "channel": CHANNELS[int(channel[i])],
                "label": "fraud" if fraud[i] else "legit",
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("fraud.csv"))
    args = parser.parse_args()
    rows = make_rows(args.rows, args.seed)
    with args.out.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    frauds = sum(row["label"] == "fraud" for row in rows)
    print(f"wrote {len(rows)} rows ({frauds} fraud) to {args.out}")


if __name__ == "__main__":
    main()
