"""Routes of the Datasets page (`datasets`) and its REST API (`api/datasets`): the
signed-in user's S3 datasets (userdatasets.py). No route names a user or a namespace:
both come from the hub's login."""

from __future__ import annotations

from urllib.parse import quote

from tornado import web

from kdash_hub.spawner import datasets as D

from .api import APIHandler
from .handlers import LauncherHandler
from .instances import LauncherError
from .userdatasets import UserDatasets

# the form's fields that are shown again after a refusal (never the keys)
KEPT = ("name", "bucket", "endpoint", "region")


def user_datasets(page: LauncherHandler) -> UserDatasets:
    if not page.is_user:
        raise LauncherError(403, "only hub users have datasets (this token is a service's)")
    user = page.current_user
    return UserDatasets(page.manager, user["name"], list(user.get("groups") or []))


class DatasetsPage(LauncherHandler):
    async def get(self) -> None:
        await self.show(message=self.done())

    def done(self) -> str:
        """The sentence after an add or a remove, made here from a dataset's name: a link
        can't put words of its own on the page (`?message=Your session expired...`)."""
        for argument, sentence in (("added", "Added {}: your notebook gets it from its next"
                                             " start."),
                                   ("removed", "Removed {}: your notebook loses it at its"
                                               " next start.")):
            name = self.get_argument(argument, "")
            if name:
                ok = D.NAME_RE.fullmatch(name) and len(name) <= D.MAX_NAME
                return sentence.format(name if ok else "the dataset")
        return ""

    async def show(self, message: str = "", error: str = "", form: dict | None = None,
                   status: int = 200) -> None:
        mine = user_datasets(self)
        self.set_status(status)
        self.set_header("Cache-Control", "no-store")
        self.render("datasets.html", view=await mine.view(), message=message, error=error,
                    form=form or {}, user_secret=mine.settings.datasets_user_secret)


class DatasetsAdd(DatasetsPage):
    """POST (the form, with its _xsrf): a dataset of the user's own."""

    async def get(self) -> None:
        raise web.HTTPError(405)

    async def post(self) -> None:
        form = {k: self.get_body_argument(k, "").strip() for k in
                (*KEPT, "access_key_id", "secret_access_key")}
        entry: dict = {k: v for k, v in form.items() if v}
        entry["path_style"] = self.get_body_argument("path_style", "") == "1"
        try:
            added = await user_datasets(self).add(entry)
        except LauncherError as e:
            if e.status not in (400, 409):
                raise
            await self.show(error=e.message, form={k: form[k] for k in KEPT},
                            status=e.status)
            return
        self.redirect(f"{self.manager.settings.service_prefix}datasets?added="
                      + quote(added["name"]), status=303)


class DatasetsRemove(DatasetsPage):
    async def get(self) -> None:
        raise web.HTTPError(405)

    async def post(self) -> None:
        name = self.get_body_argument("name", "")
        try:
            await user_datasets(self).remove(name)
        except LauncherError as e:
            if e.status not in (404, 409):
                raise
            await self.show(error=e.message, status=e.status)
            return
        self.redirect(f"{self.manager.settings.service_prefix}datasets?removed="
                      + quote(name), status=303)


class DatasetsAPI(APIHandler):
    async def get(self) -> None:
        self.set_header("Cache-Control", "no-store")
        self.write_json(await user_datasets(self).view())

    async def post(self) -> None:
        added = await user_datasets(self).add(self.json_body())
        self.set_header("Location", f"{self.manager.settings.service_prefix}api/datasets/"
                                    f"{added['name']}")
        self.write_json(added, 201)


class DatasetAPI(APIHandler):
    async def delete(self, name: str) -> None:
        await user_datasets(self).remove(name)
        self.set_status(204)
        self.finish()


def datasets_routes(prefix: str) -> list[tuple[str, type]]:
    """The page's routes (the API's are in api_routes, before its catch-all)."""
    return [
        (prefix + r"datasets/?", DatasetsPage),
        (prefix + r"datasets/add", DatasetsAdd),
        (prefix + r"datasets/remove", DatasetsRemove),
    ]
