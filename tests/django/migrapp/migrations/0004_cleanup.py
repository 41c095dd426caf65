from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("migrapp", "0003_lid_and_pallet")]

    operations = [
        migrations.RemoveField(model_name="box", name="color"),
        migrations.DeleteModel(name="Pallet"),
    ]
