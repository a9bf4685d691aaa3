"""A Starlette ASGI app for the servers benchmark, run by gunicorn's
uvicorn workers (-k uvicorn.workers.UvicornWorker): its import loads the
catalogue (bench/servers/catalogue.py) as a large read-mostly cache."""

import gc
import os

from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

import catalogue


async def product(request):
    return JSONResponse(catalogue.lookup(int(request.path_params["i"])))


async def search(request):
    k = int(request.path_params["k"])
    cat = catalogue.CATEGORIES[k % len(catalogue.CATEGORIES)]
    start = (k * 50) % len(catalogue.PRODUCTS)
    hits = [p.as_dict() for p in catalogue.PRODUCTS[start:start + 500]
            if p.attrs["category"] == cat][:20]
    return JSONResponse({"category": cat, "hits": hits})


async def health(request):
    imm = getattr(gc, "is_immortal", None)
    return JSONResponse({"ok": True, "pid": os.getpid(),
                         "products": len(catalogue.PRODUCTS),
                         "immortal": bool(imm and imm(catalogue.PRODUCTS[0]))})


async def text(request):
    return PlainTextResponse("ok")


app = Starlette(routes=[
    Route("/product/{i:int}", product),
    Route("/search/{k:int}", search),
    Route("/health", health),
    Route("/text", text),
])
