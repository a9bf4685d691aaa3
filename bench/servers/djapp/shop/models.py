import random

from django.db import models, transaction


class Category(models.Model):
    name = models.CharField(max_length=50)


class Product(models.Model):
    sku = models.CharField(max_length=20, unique=True)
    name = models.CharField(max_length=100)
    price = models.DecimalField(max_digits=8, decimal_places=2)
    stock = models.IntegerField()
    description = models.TextField()
    category = models.ForeignKey(Category, on_delete=models.CASCADE)


# The site's cache: every product as a model instance, by id and by
# category (filled by load_cache() at import, read by the views).
BY_ID = {}
BY_CATEGORY = {}


def fill(n):
    if Product.objects.count() >= n:
        return
    rng = random.Random(1)
    with transaction.atomic():
        Product.objects.all().delete()
        Category.objects.all().delete()
        cats = Category.objects.bulk_create(
            [Category(name="category %d" % i) for i in range(20)])
        Product.objects.bulk_create(
            [Product(sku="SKU-%07d" % i, name="product %d" % i,
                     price="%d.%02d" % (rng.randrange(500),
                                        rng.randrange(100)),
                     stock=rng.randrange(1000),
                     description="a product " * rng.randrange(1, 8),
                     category=cats[i % len(cats)])
             for i in range(n)], batch_size=2000)


def load_cache():
    for p in Product.objects.select_related("category").order_by("id"):
        BY_ID[p.id] = p
        BY_CATEGORY.setdefault(p.category.name, []).append(p)
