import os

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


def db_product(request, i):
    try:
        p = models.Product.objects.select_related("category").get(
            id=1 + i % len(models.BY_ID))
    except models.Product.DoesNotExist:
        raise Http404
    return JsonResponse({"id": p.id, "sku": p.sku, "pid": os.getpid()})


def health(request):
    import gc
    imm = getattr(gc, "is_immortal", None)
    p = _cached(0)
    return JsonResponse({"ok": True, "pid": os.getpid(),
                         "products": len(models.BY_ID),
                         "immortal": bool(imm and imm(p)),
                         "db": str(models.Product.objects.count())})
