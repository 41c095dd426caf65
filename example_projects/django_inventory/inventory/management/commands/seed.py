"""``manage.py seed``: load the example's production data (once)."""

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from inventory.demo import seed
from inventory.models import Warehouse


class Command(BaseCommand):
    help = "Load the inventory example's production data."

    def handle(self, *args: Any, **options: Any) -> None:
        if Warehouse.objects.exists():
            raise CommandError("the inventory already has data; nothing loaded")
        seed()
        self.stdout.write("loaded 2 warehouses, 4 products, 6 stock levels, 2 open orders")
