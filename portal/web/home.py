"""The landing page: who is signed in, and where to go next."""

from __future__ import annotations

from litestar import Controller, Request, get
from litestar.response import Template


class HomeController(Controller):
    @get("/", name="home")
    async def home(self, request: Request) -> Template:
        return Template(template_name="home/index.html.j2", context={})
