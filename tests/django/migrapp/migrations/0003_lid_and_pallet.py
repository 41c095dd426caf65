import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("migrapp", "0002_change_box")]

    operations = [
        migrations.CreateModel(
            name="Lid",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False)),
                ("colour", models.CharField(default="red", max_length=10)),
                (
                    "box",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="lids",
                        to="migrapp.box",
                    ),
                ),
            ],
        ),
        migrations.RenameModel(old_name="Crate", new_name="Pallet"),
    ]
