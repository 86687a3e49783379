"""Shipped U-Net weights and model card, installed as the ``trichoscan.models`` package."""
