from django.contrib import admin
from django.urls import path

from djapp.shop import views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("product/<int:i>", views.product),
    path("page/<int:n>", views.page),
    path("db/<int:i>", views.db_product),
    path("sitemap", views.sitemap),
    path("health", views.health),
]
