"""templates: a request-handling loop that renders templates.

What a pre-fork web worker does all day: route a request, build a
context, render an HTML page from templates with inheritance, loops,
filters and autoescaping, and return a response.  Three implementations,
the first that imports is used (the choice is reported as `impl` and
must be the same on both sides for the comparison to mean anything):

  flask      Flask app driven by its test client (werkzeug routing and
             request/response objects, Jinja2 templates);
  jinja2     Jinja2 alone, with a small hand-written request loop;
  string.Template   the standard library, if Jinja2 cannot be imported.

Debian's Flask/Jinja2 are pure Python built for its 3.11.  They are put
on sys.path from /work/main/build/prefork-site/ if that directory exists;
otherwise from a private directory build/speed-site/ of symlinks to
/usr/lib/python3/dist-packages/{jinja2,markupsafe,werkzeug,flask,
itsdangerous,click,blinker}, created here on first use.  (MarkupSafe's
C speedups are built for 3.11 and do not load; its pure-Python escape
is used on both sides.)
"""

import os
import random
import sys
from urllib.parse import parse_qs

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))
PREFORK_SITE = os.path.join(ROOT, "build", "prefork-site")
SPEED_SITE = os.path.join(ROOT, "build", "speed-site")
DIST = "/usr/lib/python3/dist-packages"
PACKAGES = ("jinja2", "markupsafe", "werkzeug", "flask", "itsdangerous",
            "click", "blinker")

REQUESTS = 2_000             # requests per run() at scale 1.0

BASE = """<!doctype html>
<html><head><title>{% block title %}{% endblock %} - shop</title></head>
<body><nav>{% for name, href in nav %}<a href="{{ href }}">{{ name }}</a>{% endfor %}</nav>
<main>{% block body %}{% endblock %}</main>
<footer>{{ footer|default("(c) shop") }}</footer></body></html>"""

LISTING = """{% extends "base.html" %}
{% block title %}{{ category|title }}{% endblock %}
{% block body %}<h1>{{ category|upper }} ({{ items|length }})</h1>
<table>{% for it in items %}
<tr class="{{ loop.cycle('odd', 'even') }}"><td>{{ loop.index }}</td>
<td><a href="/item/{{ it.id }}">{{ it.name }}</a></td>
<td>{{ "%.2f"|format(it.price) }}</td>
<td>{% if it.stock > 0 %}{{ it.stock }} left{% else %}<em>sold out</em>{% endif %}</td>
<td>{{ it.tags|join(", ") }}</td></tr>{% endfor %}
</table><p>Page {{ page }} for {{ user }}</p>{% endblock %}"""

ITEM = """{% extends "base.html" %}
{% block title %}{{ it.name }}{% endblock %}
{% block body %}<h1>{{ it.name }}</h1><p>{{ it.desc }}</p>
<ul>{% for k, v in it.attrs|dictsort %}<li>{{ k }}: {{ v }}</li>{% endfor %}</ul>
{% endblock %}"""

NAV = [("Home", "/"), ("Books", "/c/books"), ("Games", "/c/games"),
       ("Cart", "/cart"), ("Account", "/account")]
CATEGORIES = ["books", "games", "music", "garden"]

_site_used = None
IMPL = None


def _setup_path():
    """Put a directory with Debian's Flask/Jinja2 on sys.path."""
    global _site_used
    if os.path.isdir(PREFORK_SITE):
        site = PREFORK_SITE
    elif os.path.isdir(os.path.join(DIST, "jinja2")):
        site = SPEED_SITE
        os.makedirs(site, exist_ok=True)
        for p in PACKAGES:
            link = os.path.join(site, p)
            target = os.path.join(DIST, p)
            if os.path.exists(target) and not os.path.lexists(link):
                tmp = "%s.tmp%d" % (link, os.getpid())
                os.symlink(target, tmp)
                os.replace(tmp, link)
    else:
        return
    if site not in sys.path:
        sys.path.insert(0, site)
    _site_used = site


def make_items(rng, n):
    return [{"id": i, "name": "Item <%d> & co" % i,
             "price": rng.random() * 100, "stock": rng.randrange(-2, 10),
             "tags": rng.sample(["new", "sale", "eco", "hot", "gift"], 2),
             "desc": "Description of item %d with <b>markup</b>" % i,
             "attrs": {"color": rng.choice(["red", "blue"]),
                       "size": rng.randrange(1, 5), "sku": "S%05d" % i}}
            for i in range(n)]


_app = None          # flask app / jinja2 env / string templates
_items = None


def setup(scale=1.0):
    global IMPL, _app, _items
    if IMPL is not None:
        return
    _setup_path()
    rng = random.Random(11)
    _items = {c: make_items(rng, 25) for c in CATEGORIES}
    try:
        import flask
        import jinja2
        IMPL = "flask %s / jinja2 %s" % (flask.__version__, jinja2.__version__)
        _app = _make_flask(flask, jinja2)
        return
    except ImportError:
        pass
    try:
        import jinja2
        IMPL = "jinja2 %s (no flask)" % jinja2.__version__
        _app = jinja2.Environment(
            loader=jinja2.DictLoader({"base.html": BASE, "listing.html": LISTING,
                                      "item.html": ITEM}),
            autoescape=True)
        return
    except ImportError:
        pass
    IMPL = "string.Template (jinja2 not importable)"
    _app = _make_string_templates()


def _make_flask(flask, jinja2):
    app = flask.Flask("speedshop")
    app.jinja_loader = jinja2.DictLoader(
        {"base.html": BASE, "listing.html": LISTING, "item.html": ITEM})

    @app.route("/c/<category>")
    def listing(category):
        items = _items.get(category)
        if items is None:
            flask.abort(404)
        page = flask.request.args.get("page", 1, type=int)
        user = flask.request.args.get("user", "guest")
        return flask.render_template("listing.html", nav=NAV, category=category,
                                     items=items, page=page, user=user)

    @app.route("/item/<int:item_id>")
    def item(item_id):
        it = _items[CATEGORIES[item_id % 4]][item_id % 25]
        return flask.render_template("item.html", nav=NAV, it=it)

    @app.route("/api/stock/<category>")
    def api(category):
        return flask.jsonify({"category": category,
                              "stock": [it["stock"] for it in _items[category]]})

    app.testing = True
    return app.test_client()


def _make_string_templates():
    from string import Template
    row = Template('<tr><td>$n</td><td><a href="/item/$id">$name</a></td>'
                   '<td>$price</td><td>$stock</td><td>$tags</td></tr>')
    page = Template("<!doctype html><html><head><title>$title - shop</title>"
                    "</head><body><nav>$nav</nav><main>$body</main>"
                    "<footer>(c) shop</footer></body></html>")
    return row, page


def _esc(s):
    return (str(s).replace("&", "&amp;").replace("<", "&lt;")
            .replace(">", "&gt;").replace('"', "&#34;"))


def _request_paths(n):
    paths = []
    for i in range(n):
        k = i % 10
        if k < 6:
            paths.append("/c/%s?page=%d&user=u%d" % (CATEGORIES[i % 4], i % 7, i % 13))
        elif k < 9:
            paths.append("/item/%d" % (i % 100))
        else:
            paths.append("/api/stock/%s" % CATEGORIES[i % 4])
    return paths


def _handle_plain(path):
    """Routing for the non-Flask implementations."""
    import json
    route, _, qs = path.partition("?")
    args = {k: v[0] for k, v in parse_qs(qs).items()}
    parts = route.strip("/").split("/")
    if parts[0] == "c":
        return "listing", dict(category=parts[1], items=_items[parts[1]],
                               page=int(args.get("page", 1)),
                               user=args.get("user", "guest"))
    if parts[0] == "item":
        i = int(parts[1])
        return "item", dict(it=_items[CATEGORIES[i % 4]][i % 25])
    return "json", json.dumps({"category": parts[2],
                               "stock": [it["stock"] for it in _items[parts[2]]]})


def run(scale=1.0):
    setup(scale)
    n = max(1, int(REQUESTS * scale))
    total = 0
    if IMPL.startswith("flask"):
        client = _app
        for path in _request_paths(n):
            resp = client.get(path)
            total += resp.status_code + len(resp.data)
    elif IMPL.startswith("jinja2"):
        listing = _app.get_template("listing.html")
        item = _app.get_template("item.html")
        for path in _request_paths(n):
            kind, ctx = _handle_plain(path)
            if kind == "listing":
                body = listing.render(nav=NAV, **ctx)
            elif kind == "item":
                body = item.render(nav=NAV, **ctx)
            else:
                body = ctx
            total += 200 + len(body.encode())
    else:
        row, page = _app
        nav = "".join('<a href="%s">%s</a>' % (h, _esc(t)) for t, h in NAV)
        for path in _request_paths(n):
            kind, ctx = _handle_plain(path)
            if kind == "listing":
                rows = "".join(row.substitute(
                    n=j + 1, id=it["id"], name=_esc(it["name"]),
                    price="%.2f" % it["price"],
                    stock=it["stock"] if it["stock"] > 0 else "<em>sold out</em>",
                    tags=_esc(", ".join(it["tags"])))
                    for j, it in enumerate(ctx["items"]))
                body = page.substitute(title=ctx["category"].title(), nav=nav,
                                       body="<table>%s</table>" % rows)
            elif kind == "item":
                it = ctx["it"]
                lis = "".join("<li>%s: %s</li>" % (_esc(k), _esc(v))
                              for k, v in sorted(it["attrs"].items()))
                body = page.substitute(title=_esc(it["name"]), nav=nav,
                                       body="<h1>%s</h1><ul>%s</ul>" % (_esc(it["name"]), lis))
            else:
                body = ctx
            total += 200 + len(body.encode())
    return total


def info():
    return {"impl": IMPL, "site": _site_used}
