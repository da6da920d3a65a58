"""A minimal Django project using django-grip and django-eventstream (see origin.py)."""
