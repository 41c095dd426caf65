"""The models as the last migration leaves them."""

from __future__ import annotations

from django.db import models


class Box(models.Model):
    label = models.CharField(max_length=50)
    weight = models.BigIntegerField()

    class Meta:
        indexes = [models.Index(fields=["label"], name="box_label_idx")]
        constraints = [models.UniqueConstraint(fields=["label"], name="box_label_unique")]


class Lid(models.Model):
    box = models.ForeignKey(Box, on_delete=models.CASCADE, related_name="lids")
    colour = models.CharField(max_length=10, default="red")
