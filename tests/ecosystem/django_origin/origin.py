"""
A minimal Django project set up the way a Django user puts django-eventstream behind Pushpin:
django-grip's C{GripMiddleware}, django-eventstream's C{events} view with its database storage
(so channels are reliable: event ids, C{Last-Event-ID} resume, recovery), served as WSGI by
C{twisted.web} (a real threaded WSGI server; no extra dependency).

  python -m tests.ecosystem.django_origin.origin DB_PATH

It binds a free loopback port and prints C{origin port N}, then reads one line from stdin: the
C{GRIP_URL} of the proxy's control API (the proxy routes to this origin, so its ports are
known only after this one's). Then it configures Django (the GRIP_URL gets C{key=}: requests count as
proxied only with a valid C{Grip-Sig} from the proxy's C{sig_key}), creates the database
tables and prints C{origin ready}. The views are in L{tests.ecosystem.django_origin.urls}.
"""

from __future__ import annotations

import sys

SIG_KEY = "changeme"  # the stock pushpin.conf's sig_key


def configure(db_path: str, grip_url: str) -> None:
    """Django settings for the project, then django.setup() and the migrations."""
    import django
    from django.conf import settings
    from django.core.management import call_command

    settings.configure(
        DEBUG=False,
        SECRET_KEY="pushpin-tx ecosystem test",
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF="tests.ecosystem.django_origin.urls",
        INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth",
                        "django_eventstream"],
        MIDDLEWARE=["django_grip.GripMiddleware",
                    "tests.ecosystem.django_origin.urls.header_user"],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": db_path}},
        DEFAULT_AUTO_FIELD="django.db.models.AutoField",
        USE_TZ=True,
        EVENTSTREAM_STORAGE_CLASS="django_eventstream.storage.DjangoModelStorage",
        # key=: django-grip then counts a request as proxied only with a valid Grip-Sig
        # (GRIP_VERIFY_KEY alone trips over a KeyError in django-grip 3.5.2's middleware)
        GRIP_URL=f"{grip_url}?key={SIG_KEY}",
        LOGGING_CONFIG=None,
    )
    django.setup()
    call_command("migrate", verbosity=0, interactive=False)


def main(argv: list[str]) -> None:
    """Bind, tell the port, wait for the GRIP_URL, configure, serve until killed."""
    from twisted.internet import reactor
    from twisted.web import server
    from twisted.web.wsgi import WSGIResource

    application: list = []

    def wsgi(environ, start_response):
        return application[0](environ, start_response)

    site = server.Site(WSGIResource(reactor, reactor.getThreadPool(), wsgi))
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    print(f"origin port {port.getHost().port}", flush=True)
    grip_url = sys.stdin.readline().strip()
    configure(argv[1], grip_url)
    from django.core.wsgi import get_wsgi_application

    application.append(get_wsgi_application())
    print("origin ready", flush=True)
    reactor.run()


if __name__ == "__main__":
    main(sys.argv)
