"""Language tags of delivered audio: a manifest's BCP 47 tag (``es``, ``fr-CA``, ``pt-BR``)
as the ISO 639-2 code a container stores.

MP4 and MOV store ISO 639-2/T (``fra``, ``deu``, ``zho``); Matroska's ``Language``
element takes ISO 639-2/B (``fre``, ``ger``, ``chi``).  The two differ for the
twenty-odd languages listed in :data:`_B_FORMS`; every other code is the same in
both.  A tag whose primary language has no 639-2 code here is refused with the
list's address rather than written as ``und``.
"""

from __future__ import annotations

#: ISO 639-1 (two letters) -> ISO 639-2/T (three letters).
ISO639_1_TO_2T: dict[str, str] = {
    "aa": "aar", "ab": "abk", "af": "afr", "ak": "aka", "am": "amh", "an": "arg", "ar": "ara", "as": "asm",
    "av": "ava", "ay": "aym", "az": "aze", "ba": "bak", "be": "bel", "bg": "bul", "bi": "bis", "bm": "bam",
    "bn": "ben", "bo": "bod", "br": "bre", "bs": "bos", "ca": "cat", "ce": "che", "ch": "cha", "co": "cos",
    "cr": "cre", "cs": "ces", "cu": "chu", "cv": "chv", "cy": "cym", "da": "dan", "de": "deu", "dv": "div",
    "dz": "dzo", "ee": "ewe", "el": "ell", "en": "eng", "eo": "epo", "es": "spa", "et": "est", "eu": "eus",
    "fa": "fas", "ff": "ful", "fi": "fin", "fj": "fij", "fo": "fao", "fr": "fra", "fy": "fry", "ga": "gle",
    "gd": "gla", "gl": "glg", "gn": "grn", "gu": "guj", "gv": "glv", "ha": "hau", "he": "heb", "hi": "hin",
    "ho": "hmo", "hr": "hrv", "ht": "hat", "hu": "hun", "hy": "hye", "hz": "her", "ia": "ina", "id": "ind",
    "ie": "ile", "ig": "ibo", "ii": "iii", "ik": "ipk", "io": "ido", "is": "isl", "it": "ita", "iu": "iku",
    "ja": "jpn", "jv": "jav", "ka": "kat", "kg": "kon", "ki": "kik", "kj": "kua", "kk": "kaz", "kl": "kal",
    "km": "khm", "kn": "kan", "ko": "kor", "kr": "kau", "ks": "kas", "ku": "kur", "kv": "kom", "kw": "cor",
    "ky": "kir", "la": "lat", "lb": "ltz", "lg": "lug", "li": "lim", "ln": "lin", "lo": "lao", "lt": "lit",
    "lu": "lub", "lv": "lav", "mg": "mlg", "mh": "mah", "mi": "mri", "mk": "mkd", "ml": "mal", "mn": "mon",
    "mr": "mar", "ms": "msa", "mt": "mlt", "my": "mya", "na": "nau", "nb": "nob", "nd": "nde", "ne": "nep",
    "ng": "ndo", "nl": "nld", "nn": "nno", "no": "nor", "nr": "nbl", "nv": "nav", "ny": "nya", "oc": "oci",
    "oj": "oji", "om": "orm", "or": "ori", "os": "oss", "pa": "pan", "pi": "pli", "pl": "pol", "ps": "pus",
    "pt": "por", "qu": "que", "rm": "roh", "rn": "run", "ro": "ron", "ru": "rus", "rw": "kin", "sa": "san",
    "sc": "srd", "sd": "snd", "se": "sme", "sg": "sag", "si": "sin", "sk": "slk", "sl": "slv", "sm": "smo",
    "sn": "sna", "so": "som", "sq": "sqi", "sr": "srp", "ss": "ssw", "st": "sot", "su": "sun", "sv": "swe",
    "sw": "swa", "ta": "tam", "te": "tel", "tg": "tgk", "th": "tha", "ti": "tir", "tk": "tuk", "tl": "tgl",
    "tn": "tsn", "to": "ton", "tr": "tur", "ts": "tso", "tt": "tat", "tw": "twi", "ty": "tah", "ug": "uig",
    "uk": "ukr", "ur": "urd", "uz": "uzb", "ve": "ven", "vi": "vie", "vo": "vol", "wa": "wln", "wo": "wol",
    "xh": "xho", "yi": "yid", "yo": "yor", "za": "zha", "zh": "zho", "zu": "zul",
}

#: ISO 639-2/T -> 639-2/B where they differ.
_B_FORMS: dict[str, str] = {
    "sqi": "alb", "hye": "arm", "eus": "baq", "mya": "bur", "zho": "chi", "ces": "cze", "nld": "dut",
    "fra": "fre", "kat": "geo", "deu": "ger", "ell": "gre", "isl": "ice", "mkd": "mac", "mri": "mao",
    "msa": "may", "fas": "per", "ron": "rum", "slk": "slo", "bod": "tib", "cym": "wel",
}
_T_FORMS = {b: t for t, b in _B_FORMS.items()}
_KNOWN_3 = set(ISO639_1_TO_2T.values()) | set(_B_FORMS.values())


def iso639_2(tag: str, bibliographic: bool = False) -> str:
    """The ISO 639-2 code of the BCP 47 ``tag``'s primary language (``'fr-CA'`` -> ``'fra'``;
    ``bibliographic=True`` -> ``'fre'``, for Matroska).  A three-letter primary subtag is
    taken as given (ISO 639-2/3: ``yue``, ``fil``); ``und``/``mul``/``zxx`` pass through."""
    primary = str(tag).strip().replace("_", "-").split("-")[0].lower()
    if len(primary) == 2:
        code = ISO639_1_TO_2T.get(primary)
        if code is None:
            raise ValueError(
                f"language {tag!r}: '{primary}' is not an ISO 639-1 code; give dub.language as BCP 47 "
                "(e.g. 'es', 'fr-CA') or an ISO 639-2 code (e.g. 'spa'), see "
                "https://www.loc.gov/standards/iso639-2/php/code_list.php")
    elif len(primary) == 3 and primary.isalpha():
        code = _T_FORMS.get(primary, primary)
    else:
        raise ValueError(
            f"language {tag!r}: not a BCP 47 tag; give dub.language as e.g. 'es', 'fr-CA', 'pt-BR' or 'spa'")
    return _B_FORMS.get(code, code) if bibliographic else code


def container_language(tag: str, container: str) -> str:
    """The code to store for ``tag`` in ``container`` (a file suffix or name: mp4, mov, mkv)."""
    kind = container.lower().lstrip(".")
    return iso639_2(tag, bibliographic=kind in ("mkv", "matroska", "webm", "mka"))


def same_language(a: str | None, b: str | None) -> bool:
    """Whether two tags (BCP 47 or either ISO 639-2 form) name the same language."""
    if not a or not b:
        return False
    try:
        return iso639_2(a) == iso639_2(b)
    except ValueError:
        return a.lower() == b.lower()
