"""regex: re compile/search/findall/sub/split over generated text.

Web-log-like lines generated from a seeded RNG; a set of patterns is
compiled afresh in every round (re.purge() first, so the sre compiler,
written in Python, runs too), then matched with search, match,
findall, finditer, sub (with a string and with a callable replacement)
and split.
"""

import random
import re

PATTERNS = [
    r"(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})",
    r'"(GET|POST|PUT|DELETE) (/[\w/.-]*)(?:\?([^" ]*))? HTTP/1\.[01]"',
    r"\b(\d{3})\b \d+",
    r"user=(?P<user>[a-z]+)(?:&id=(?P<id>\d+))?",
    r"\[(\d{2})/(\w{3})/(\d{4}):(\d{2}):(\d{2}):(\d{2})",
    r"(?i)mozilla|curl|python-requests",
    r"[aeiou]{2,}",
]
WORDS = ["home", "api", "v1", "users", "items", "static", "img", "css",
         "login", "logout", "search", "cart"]
AGENTS = ["Mozilla/5.0", "curl/7.88", "python-requests/2.28", "Go-http/1.1"]
METHODS = ["GET", "GET", "GET", "POST", "PUT", "DELETE"]


def make_lines(rng, n):
    out = []
    for i in range(n):
        ip = ".".join(str(rng.randrange(256)) for _ in range(4))
        path = "/" + "/".join(rng.choice(WORDS) for _ in range(rng.randrange(1, 4)))
        q = "?user=%s&id=%d" % (rng.choice(WORDS), i) if i % 3 == 0 else ""
        out.append('%s - - [%02d/Mar/2024:%02d:%02d:%02d +0000] "%s %s%s HTTP/1.1" %d %d "%s"'
                   % (ip, 1 + i % 28, i % 24, i % 60, (i * 7) % 60,
                      rng.choice(METHODS), path, q,
                      rng.choice([200, 200, 301, 404, 500]),
                      rng.randrange(50000), rng.choice(AGENTS)))
    return out


def run(scale=1.0):
    rng = random.Random(2024)
    lines = make_lines(rng, 2000)
    text = "\n".join(lines)
    reps = max(1, int(16 * scale))
    total = 0
    for _ in range(reps):
        re.purge()
        pats = [re.compile(p) for p in PATTERNS]
        ip, req, status, user, date, agent, vowels = pats
        for line in lines:
            m = ip.match(line)
            if m:
                total += int(m.group(4))
            m = req.search(line)
            if m:
                total += len(m.group(2))
            m = user.search(line)
            if m and m.group("id"):
                total += int(m.group("id"))
        total += len(status.findall(text))
        total += sum(1 for _ in date.finditer(text))
        total += len(agent.findall(text))
        total += len(vowels.sub("_", text))
        total += len(ip.sub(lambda m: m.group(1) + ".x.x.x", text))
        total += len(re.split(r"\s+", text))
    return total
