"""Operators' view of the package documents in MongoDB (Cosmos DB for MongoDB in production).

Packages are not ORM models, so there is no ModelAdmin: two admin pages (a list with search,
and a document) are added to the admin site's URLs, and a "Packages" line to its index and
sidebar. Every read is one Cosmos DB supports: by `_id`, by the indexed `tag`, or a page of
documents in `_id` order (each page starts after the last id of the one before).
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from django.contrib import admin
from django.contrib.admin.utils import quote
from django.http import Http404, HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, URLResolver, path, reverse
from pymongo.errors import PyMongoError

from businesses.models import Business
from packages.selectors import package_get, packages_by_tag
from packages.store import packages_collection

PAGE_SIZE = 50
# Who may read packages: whoever may read deliveries.
PERMISSION = "deliveries.view_delivery"
# The columns of the list, in order; a document's page shows every field it has.
COLUMNS = ("_id", "tag", "size", "weight_kg", "business_id", "delivery_id", "created_at")
TITLES = ("id", "tag", "size", "weight (kg)", "business", "delivery", "created at")


def _page(*, after: str | None, limit: int) -> list[dict[str, Any]]:
    """Documents in `_id` order from just after `after` (a range on `_id`, always indexed)."""
    query: dict[str, Any] = {"_id": {"$gt": after}} if after else {}
    return list(packages_collection().find(query).sort("_id", 1).limit(limit))


def _search(term: str) -> tuple[list[dict[str, Any]], str]:
    """The package with that id, else the packages with that tag; and what was searched."""
    try:
        package_id = UUID(term)
    except ValueError:
        return packages_by_tag(tag=term, limit=PAGE_SIZE), f"tag “{term}”"
    found = package_get(package_id=package_id)
    return ([found] if found else []), f"id {package_id}"


def _rows(documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The documents as the list shows them: with their page, business and delivery links."""
    names = dict(
        Business.objects.filter(
            pk__in=[d["business_id"] for d in documents if _is_uuid(d.get("business_id"))]
        ).values_list("pk", "name")
    )
    rows = []
    for document in documents:
        business_id = document.get("business_id")
        delivery_id = document.get("delivery_id")
        rows.append(
            {
                "cells": [document.get(column, "") for column in COLUMNS],
                "url": reverse("admin:packages_package_detail", args=[str(document["_id"])]),
                "business": names.get(UUID(business_id)) if _is_uuid(business_id) else None,
                "delivery_url": _delivery_url(delivery_id),
            }
        )
    return rows


def _is_uuid(value: Any) -> bool:
    try:
        UUID(str(value))
    except ValueError:
        return False
    return True


def _delivery_url(delivery_id: Any) -> str | None:
    if not _is_uuid(delivery_id):
        return None
    return reverse("admin:deliveries_delivery_change", args=[quote(str(delivery_id))])


def _context(request: HttpRequest, title: str, **extra: Any) -> dict[str, Any]:
    return {
        **admin.site.each_context(request),
        "title": title,
        "subtitle": None,
        "list_url": reverse("admin:packages_package_list"),
        **extra,
    }


def _allowed(request: HttpRequest) -> bool:
    return request.user.is_active and request.user.has_perm(PERMISSION)


def package_list(request: HttpRequest) -> HttpResponse:
    if not _allowed(request):
        return HttpResponse("Reading packages needs the permission to view deliveries.", status=403)
    term = request.GET.get("q", "").strip()
    after = request.GET.get("after") or None
    searched, unreachable, more = "", "", None
    try:
        if term:
            documents, searched = _search(term)
        else:
            documents = _page(after=after, limit=PAGE_SIZE + 1)
            if len(documents) > PAGE_SIZE:
                documents = documents[:PAGE_SIZE]
                more = str(documents[-1]["_id"])
    except PyMongoError as exc:
        documents, unreachable = [], str(exc).split(",")[0]
    context = _context(
        request,
        "Packages",
        columns=TITLES,
        rows=_rows(documents),
        q=term,
        searched=searched,
        after=after,
        more=more,
        unreachable=unreachable,
    )
    return TemplateResponse(request, "admin/packages/package_list.html", context)


def package_detail(request: HttpRequest, package_id: str) -> HttpResponse:
    if not _allowed(request):
        return HttpResponse("Reading packages needs the permission to view deliveries.", status=403)
    try:
        wanted = UUID(package_id)
    except ValueError:
        raise Http404("A package id is a UUID.") from None
    try:
        document = package_get(package_id=wanted)
    except PyMongoError as exc:
        context = _context(request, f"Package {wanted}", unreachable=str(exc).split(",")[0])
        return TemplateResponse(request, "admin/packages/package_detail.html", context, status=503)
    if document is None:
        raise Http404(f"No package {wanted}.")
    business_id = document.get("business_id")
    business = (
        Business.objects.filter(pk=str(business_id)).first() if _is_uuid(business_id) else None
    )
    context = _context(
        request,
        f"Package {wanted}",
        fields=sorted(document.items(), key=lambda item: (item[0] != "_id", item[0])),
        business=business,
        business_url=(
            reverse("admin:businesses_business_change", args=[quote(business.pk)])
            if business
            else None
        ),
        delivery_url=_delivery_url(document.get("delivery_id")),
    )
    return TemplateResponse(request, "admin/packages/package_detail.html", context)


def _packages_in_admin(site: admin.AdminSite) -> None:
    """The packages' pages among the admin site's URLs, and a line for them in its index and
    sidebar (an app with no ModelAdmin gets neither by itself)."""
    urls, apps = site.get_urls, site.get_app_list

    def get_urls() -> list[URLResolver | URLPattern]:
        return [
            path("packages/", site.admin_view(package_list), name="packages_package_list"),
            path(
                "packages/<str:package_id>/",
                site.admin_view(package_detail),
                name="packages_package_detail",
            ),
            *urls(),
        ]

    def get_app_list(request: HttpRequest, app_label: str | None = None) -> list[Any]:
        listed = apps(request, app_label)
        if app_label not in (None, "packages") or not _allowed(request):
            return listed
        url = reverse("admin:packages_package_list")
        entry = {
            "name": "Packages",
            "app_label": "packages",
            "app_url": url,
            "has_module_perms": True,
            "models": [
                {
                    "name": "Packages",
                    "object_name": "Package",
                    "admin_url": url,
                    "add_url": None,
                    "view_only": True,
                    "perms": {"add": False, "change": False, "delete": False, "view": True},
                }
            ],
        }
        return sorted([*listed, entry], key=lambda app: app["name"].lower())

    site.get_urls = get_urls  # type: ignore[method-assign]
    site.get_app_list = get_app_list  # type: ignore[method-assign]


_packages_in_admin(admin.site)
