"""The project's settings with one more URL, `/bench/bare`, the baseline of the ingestion bench."""

from portal.settings import *  # noqa: F403

ROOT_URLCONF = "bench.urls"
