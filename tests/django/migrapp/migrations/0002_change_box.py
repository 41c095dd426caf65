from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("migrapp", "0001_initial")]

    operations = [
        migrations.AddField(
            model_name="box",
            name="color",
            field=models.CharField(default="grey", max_length=10),
        ),
        migrations.AlterField(model_name="box", name="weight", field=models.BigIntegerField()),
        migrations.RenameField(model_name="box", old_name="name", new_name="label"),
        migrations.AddIndex(
            model_name="box", index=models.Index(fields=["label"], name="box_label_idx")
        ),
        migrations.AddConstraint(
            model_name="box",
            constraint=models.UniqueConstraint(fields=["label"], name="box_label_unique"),
        ),
    ]
