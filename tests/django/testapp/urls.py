from django.urls import path

from . import views

urlpatterns = [
    path("products/", views.products),
    path("mark/", views.mark),
    path("stream/", views.stream),
    path("boom/", views.boom),
    path("astream/", views.astream),
]
