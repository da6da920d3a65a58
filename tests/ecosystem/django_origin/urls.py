"""
The Django project's views and URLs (imported by Django once origin.py has configured it).

  GET  /events/?channel=A&channel=B  django_eventstream's events view, as its docs mount it;
                                     C{X-User: NAME} logs the request in as user NAME
  POST /send/                        C{channel}, C{text}, C{skip} (user names, repeatable):
                                     C{send_event(channel, "message", text, skip_user_ids=...)},
                                     published before the answer; answers the channel's event id
  GET  /users/NAME/                  the id of user NAME (created if new)
"""

from __future__ import annotations

from django.contrib.auth.models import AnonymousUser, User
from django.http import HttpResponse
from django.urls import path
from django_eventstream import get_current_event_id, send_event
from django_eventstream.views import events


def header_user(get_response):
    """Middleware: the user named by X-User (created on first use), else anonymous."""

    def middleware(request):
        name = request.headers.get("X-User")
        request.user = User.objects.get_or_create(username=name)[0] if name else AnonymousUser()
        return get_response(request)

    return middleware


def send(request):
    """Publish one event the way an application does, skipping the named users."""
    channel = request.POST["channel"]
    skip = [str(User.objects.get_or_create(username=name)[0].id)
            for name in request.POST.getlist("skip")]
    send_event(channel, "message", request.POST["text"], skip_user_ids=skip, async_publish=False)
    return HttpResponse(get_current_event_id([channel]), content_type="text/plain")


def user_id(request, name):
    """The id django-eventstream gives this user in its GRIP meta."""
    return HttpResponse(str(User.objects.get_or_create(username=name)[0].id),
                        content_type="text/plain")


urlpatterns = [
    path("events/", events),
    path("send/", send),
    path("users/<str:name>/", user_id),
]
