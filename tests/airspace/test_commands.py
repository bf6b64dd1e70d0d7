from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from airspace.models import NoFlyZone
from tests.airspace.zones import BOW_TIE, collection, feature, square

pytestmark = pytest.mark.django_db


def test_import_zones_creates_then_updates_and_says_how_many(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "zones.geojson"
    file.write_text(json.dumps(collection(feature("Lumen Field"), feature("Airport"))))
    call_command("import_zones", str(file))
    assert capsys.readouterr().out.strip() == "2 zone(s) created, 0 updated"

    file.write_text(
        json.dumps(collection(feature("Airport", square(-122.31, 47.52)), feature("Pier")))
    )
    call_command("import_zones", str(file))
    assert capsys.readouterr().out.strip() == "1 zone(s) created, 1 updated"
    assert NoFlyZone.objects.get(name="Airport").geometry == square(-122.31, 47.52)


def test_import_zones_names_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match=r"cannot read .*missing\.geojson"):
        call_command("import_zones", str(tmp_path / "missing.geojson"))

    broken = tmp_path / "broken.geojson"
    broken.write_text('{"type": "FeatureCollection",\n "features": [}')
    with pytest.raises(CommandError, match=r"broken\.geojson is not JSON: .* at line 2, column 15"):
        call_command("import_zones", str(broken))

    tie = tmp_path / "tie.geojson"
    tie.write_text(json.dumps(collection(feature("Fine"), feature("Tie", BOW_TIE))))
    with pytest.raises(CommandError, match=r'tie.geojson: feature 1 \("Tie"\): .*crosses itself'):
        call_command("import_zones", str(tie))
    assert not NoFlyZone.objects.exists()
