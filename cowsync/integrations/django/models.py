"""No models: this module exists so Django sends this app ``post_migrate`` (see apps.py).

Django signals ``post_migrate`` only to apps with a models module; the hook that enables
``COWSYNC["MODELS"]`` after ``migrate`` listens for this app's signal.
"""
