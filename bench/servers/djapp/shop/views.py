import logging
import os

from django.db import connection
from django.http import Http404, JsonResponse
from django.shortcuts import render

from djapp.shop import models


def _cached(i):
    return models.BY_ID[1 + i % len(models.BY_ID)]


def product(request, i):
    p = _cached(i)
    return JsonResponse({"id": p.id, "sku": p.sku, "name": p.name,
                         "price": str(p.price), "stock": p.stock,
                         "category": p.category.name})


def page(request, n):
    names = sorted(models.BY_CATEGORY)
    items = models.BY_CATEGORY[names[n % len(names)]]
    start = (n * 20) % max(1, len(items) - 20)
    return render(request, "shop/page.html",
                  {"items": items[start:start + 20], "n": n})


log = logging.getLogger("djapp")


def db_product(request, i):
    log.info("db %d from %d", i, os.getpid())
    try:
        p = models.Product.objects.select_related("category").get(
            id=1 + i % len(models.BY_ID))
    except models.Product.DoesNotExist:
        raise Http404
    return JsonResponse({"id": p.id, "sku": p.sku, "pid": os.getpid()})


def sitemap(request):
    """Every cached product's URL and price: a view that reads the whole
    cache (sitemaps, feeds, reports do)."""
    total = 0
    urls = []
    for p in models.BY_ID.values():
        urls.append("/product/%d" % p.id)
        total += p.stock
    return JsonResponse({"urls": len(urls), "stock": total})


def health(request):
    import gc
    imm = getattr(gc, "is_immortal", None)
    p = _cached(0)
    count = models.Product.objects.count()     # this worker's connection
    return JsonResponse({"ok": True, "pid": os.getpid(),
                         "products": len(models.BY_ID),
                         "immortal": bool(imm and imm(p)),
                         "db": count,
                         # the sqlite3 connection the worker opened, and
                         # the handler that writes the log file
                         "conn_immortal": bool(imm and imm(
                             connection.connection)),
                         "stream_immortal": bool(imm and any(
                             imm(h.stream) for h in log.handlers))})
