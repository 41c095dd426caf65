from django.urls import path

from . import views

urlpatterns = [
    path("stock/", views.stock),
    path("stock/restock-low/", views.restock_low),
    path("stock/adjust/", views.adjust_stock),
    path("orders/", views.orders),
    path("orders/<int:number>/ship/", views.ship_order),
    path("products/<str:sku>/delete/", views.delete_product),
    path("products/<str:sku>/price/", views.set_price),
]
