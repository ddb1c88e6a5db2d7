"""The curated English lexicon behind the prompt parser.

Without a tagger the parser only knows the words listed here: relation phrases (multi-word
prepositions included), verbs with all their inflections, colours, materials, sizes, number words,
determiners and auxiliaries. Any other word that is not a function word (spaCy's English stop
words) is read as part of a noun phrase. With a tagger, the tagger only decides about the words
this file does not list, so both parse the lexicon's cases identically.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from spacy.lang.en.stop_words import STOP_WORDS

if TYPE_CHECKING:
    import inflect

from lina.prompts.vocabulary import CAUSAL, COMPARATIVE, SPATIAL


@dataclass(frozen=True)
class RelationSense:
    """What a predicate means, independent of its wording.

    ``canonical`` groups synonyms ("on top of", "rests on" and "upon" are all "on"; "eats",
    "eating" and "eaten by" are all "eat"). ``passive`` marks "eaten by"-style predicates whose
    grammatical subject is the one acted upon.
    """

    canonical: str
    kind: str
    passive: bool = False


# Spatial prepositions, multi-word ones included; each line: canonical <- wordings.
_SPATIAL_PHRASES = {
    "on": "on, upon, onto, atop, on top of, on the top of, at the top of, on the edge of, at the edge of",
    "under": "under, underneath, beneath, below, at the bottom of, on the bottom of",
    "above": "above, over",
    "in": "in, inside, inside of, into, within",
    "behind": "behind, in back of",
    "in front of": "in front of",
    "left of": "left of, to the left of, on the left of, on the left side of, at the left of",
    "right of": "right of, to the right of, on the right of, on the right side of, at the right of",
    "next to": "next to, beside, alongside, by, on the side of, at the side of, by the side of",
    "near": "near, close to, near to, nearby, close by",
    "far from": "far from, far away from, away from",
    "in the middle of": "in the middle of, in the center of, in the centre of",
    "between": "between",
    "among": "among, amongst, amid",
    "around": "around",
    "against": "against",
    "across": "across",
    "along": "along",
    "through": "through",
    "outside": "outside, outside of, out of",
    "at": "at",
    "from": "from",
    "off": "off",
    "toward": "toward, towards",
    "down": "down",
    "past": "past",
    "full of": "full of, half full of, half-full of, filled to the brim with",
    "empty of": "empty of",
    # Positions in the picture, which need no object: "the dog is on the left".
    "on the left": "on the left, to the left, at the left",
    "on the right": "on the right, to the right, at the right",
    "in the middle": "in the middle, in the center, in the centre",
    "in the background": "in the background",
    "in the foreground": "in the foreground",
}
CONTENT_RELATIONS = frozenset({"full of", "empty of"})
"""Canonical predicates of "<container> <predicate> <contents>": what follows is said of the container."""
ABSOLUTE_POSITIONS = frozenset(
    {"on the left", "on the right", "in the middle", "in the background", "in the foreground"}
)
"""Canonical spatial predicates that hold without an object."""

SPATIAL_PHRASES: dict[str, str] = {
    wording.strip(): canonical for canonical, wordings in _SPATIAL_PHRASES.items() for wording in wordings.split(",")
}
"""Every wording of a spatial relation -> its canonical name."""

# Verbs, one per line: base, third person singular, -ing, past, past participle, then any variant
# spellings of the past ("burnt").
_VERB_TABLE = """
eat eats eating ate eaten
cast casts casting cast cast
reflect reflects reflecting reflected reflected
pour pours pouring poured poured
support supports supporting supported supported
hold holds holding held held
chase chases chasing chased chased
fill fills filling filled filled
push pushes pushing pushed pushed
pull pulls pulling pulled pulled
carry carries carrying carried carried
kick kicks kicking kicked kicked
hit hits hitting hit hit
throw throws throwing threw thrown
catch catches catching caught caught
bite bites biting bit bitten
lift lifts lifting lifted lifted
drop drops dropping dropped dropped
touch touches touching touched touched
break breaks breaking broke broken
cover covers covering covered covered
block blocks blocking blocked blocked
hide hides hiding hid hidden
illuminate illuminates illuminating illuminated illuminated
light lights lighting lit lit lighted
shine shines shining shone shone shined
melt melts melting melted melted
burn burns burning burned burned burnt
spill spills spilling spilled spilled spilt
drag drags dragging dragged dragged
ride rides riding rode ridden
feed feeds feeding fed fed
lick licks licking licked licked
hug hugs hugging hugged hugged
kiss kisses kissing kissed kissed
grab grabs grabbing grabbed grabbed
drink drinks drinking drank drunk
wear wears wearing wore worn
follow follows following followed followed
watch watches watching watched watched
see sees seeing saw seen
face faces facing faced faced
attack attacks attacking attacked attacked
hunt hunts hunting hunted hunted
squeeze squeezes squeezing squeezed squeezed
crush crushes crushing crushed crushed
splash splashes splashing splashed splashed
wrap wraps wrapping wrapped wrapped
cut cuts cutting cut cut
blow blows blowing blew blown
sniff sniffs sniffing sniffed sniffed
pet pets petting petted petted
walk walks walking walked walked
bounce bounces bouncing bounced bounced
roll rolls rolling rolled rolled
fly flies flying flew flown
swim swims swimming swam swum
jump jumps jumping jumped jumped
run runs running ran run
fall falls falling fell fallen
sink sinks sinking sank sunk
surround surrounds surrounding surrounded surrounded
sleep sleeps sleeping slept slept
play plays playing played played
look looks looking looked looked
climb climbs climbing climbed climbed
rest rests resting rested rested
sit sits sitting sat sat
stand stands standing stood stood
lie lies lying lay lain
lay lays laying laid laid
lean leans leaning leaned leaned leant
hang hangs hanging hung hung
float floats floating floated floated
perch perches perching perched perched
balance balances balancing balanced balanced
place places placing placed placed
stack stacks stacking stacked stacked
"""

POSTURE_VERBS = frozenset("rest sit stand lie lay lean hang float perch balance place stack sleep".split())
"""Verbs that only say where something is: "rests on" means "on", "hangs above" means "above"."""

PASSIVE_MARKERS = frozenset({"by", "with"})
"""A past participle followed by one of these is passive: "eaten by", "filled with"."""


def _verb_forms(table: str) -> dict[str, tuple[str, frozenset[str]]]:
    """Every form in ``table`` -> (base form, which forms it is: base / 3sg / ing / past / participle)."""
    forms: dict[str, tuple[str, frozenset[str]]] = {}
    for line in table.strip().splitlines():
        base, third, ing, past, participle, *variants = line.split()
        named = [(base, "base"), (third, "3sg"), (ing, "ing"), (past, "past"), (participle, "participle")]
        named += [(v, name) for v in variants for name in ("past", "participle")]
        for form, name in named:
            known_base, names = forms.get(form, (base, frozenset()))
            forms[form] = (base if name == "base" else known_base, names | {name})
    return forms


VERB_FORMS = _verb_forms(_VERB_TABLE)
"""Every listed verb form -> (base form, which forms it is)."""

COMPARATIVE_QUANTIFIERS = frozenset({"more", "less", "fewer"})
"""Words that open a comparison: "more dirt than empty space", "less water than sand"."""

COLORS: dict[str, str] = {
    c: c
    for c in """red orange yellow green blue purple violet pink brown black white gray grey cyan
    magenta teal turquoise beige navy maroon""".split()
}
COLOR_MODIFIERS = frozenset({"dark", "light", "bright", "pale", "deep"})
"""Only read as part of a colour when a colour follows ("dark red"); "a light" is a noun."""

MATERIALS: dict[str, str] = {
    "glass": "glass", "wood": "wood", "wooden": "wood", "metal": "metal", "metallic": "metal",
    "steel": "steel", "iron": "iron", "copper": "copper", "bronze": "bronze", "brass": "brass",
    "gold": "gold", "golden": "gold", "silver": "silver", "plastic": "plastic", "rubber": "rubber",
    "paper": "paper", "cardboard": "cardboard", "stone": "stone", "marble": "marble",
    "concrete": "concrete", "brick": "brick", "ceramic": "ceramic", "porcelain": "porcelain",
    "clay": "clay", "leather": "leather", "cotton": "cotton", "wool": "wool", "woolen": "wool",
    "silk": "silk", "velvet": "velvet", "fabric": "fabric", "ice": "ice", "crystal": "crystal",
}  # fmt: skip
SIZES: dict[str, str] = {
    s: s
    for s in """big large huge giant enormous massive small little tiny miniature tall short long
    wide narrow thin thick""".split()
}
ATTRIBUTE_TABLES: dict[str, dict[str, str]] = {"color": COLORS, "material": MATERIALS, "size": SIZES}
"""Attribute name -> (word -> value). A word found here inside a noun phrase is an attribute,
unless it is the phrase's last word, which makes it the noun ("a wine glass", "an orange")."""

NUMBERS: dict[str, str] = {
    w: str(i)
    for i, w in enumerate(
        """one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen
        sixteen seventeen eighteen nineteen twenty""".split(),
        start=1,
    )
} | {"dozen": "12", "several": "several", "many": "many", "few": "few", "multiple": "multiple"}
"""Count words -> the ``count`` attribute (digits for exact numbers)."""

FRAMING_NOUNS = frozenset(
    """photo photograph picture image painting drawing sketch illustration render rendering portrait
    snapshot shot close-up closeup view scene watercolor watercolour artwork poster still""".split()
)
"""Nouns that frame the scene rather than stand in it: in "a photo of a dog right of a cup" the
entities are the dog and the cup."""

STYLE_WORDS = frozenset(
    """photorealistic photo-realistic realistic hyperrealistic hyper-realistic cinematic highly detailed
    intricate 8k 4k hd uhd hdr digital concept trending oil watercolor watercolour studio soft dramatic
    volumetric unreal octane sharp bokeh masterpiece illustration anime rendered 3d artstation award
    award-winning ultra dslr 35mm macro vibrant minimalist surreal impressionist pixel epic stunning
    professional shallow sunset depth""".split()
)
"""Words that open a style clause after a comma (", cinematic lighting", ", 8k"): the clause names no
entity and no relation."""
STYLE_PHRASES: tuple[tuple[str, ...], ...] = tuple(
    tuple(p.split()) for p in ("in the style of", "in style of", "trending on", "art by", "painted by", "by artist")
)
"""Wordings that open a style clause anywhere ("... in the style of van gogh")."""

QUANTITY_NOUNS: dict[str, str] = {
    "pair": "2", "couple": "2", "group": "", "pile": "", "bunch": "", "lot": "", "set": "",
    "herd": "", "flock": "", "stack": "", "row": "", "handful": "", "heap": "", "crowd": "",
}  # fmt: skip
"""In "a pair of shoes" the noun is "shoe"; the value, when not empty, is the implied count."""

DETERMINERS = frozenset(
    """a an the some this that these those its his her their my your our another each every any
    no all both""".split()
)
RELATIVE_PRONOUNS = frozenset({"which", "who", "whom"})
""""that" is one too when it follows a noun phrase ("a ball that is not under the box")."""

BE_FORMS = frozenset({"is", "are", "was", "were", "be", "been", "being", "am", "'s", "’s", "'re", "’re", "'m"})
AUXILIARIES = BE_FORMS | frozenset(
    """do does did has have had can could will would should may might must ca wo shall""".split()
)
NEGATIONS = frozenset({"not", "n't", "n’t", "never"})
CONJUNCTIONS = frozenset({"and", "or", ",", ";", "&", "but", "while"})

CONTENT_STOP_WORDS = frozenset(
    "back bottom front side top part whole other empty full amount name same first third last".split()
)
"""spaCy stop words that are nouns or adjectives in scene prompts ("the back of a car")."""

ADVERBS = frozenset(
    """soon slowly quickly gently carefully partially partly slightly completely fully nearly
    directly barely halfway also still just now already really very quite often always again""".split()
)
"""Adverbs that may stand between a subject and its predicate ("a dog is still eating")."""

FUNCTION_WORDS: frozenset[str] = (
    frozenset(STOP_WORDS) - CONTENT_STOP_WORDS - frozenset({"more", "less", "fewer", "than", "as", "of"})
)
"""Words that end a noun phrase and mean nothing to the parser on their own."""


@lru_cache(maxsize=4096)
def singular(noun: str) -> str:
    """Singular form of an English noun ("balls" -> "ball", "people" -> "person")."""
    if noun.endswith(("us", "is", "ss")) or not noun.isalpha():
        return noun
    result = inflect_engine().singular_noun(noun)
    return result or noun


@lru_cache(maxsize=1)
def inflect_engine() -> inflect.engine:
    """inflect's engine, imported on first use without its run-time type checks.

    inflect decorates its methods with typeguard's ``@typechecked``, which re-parses and recompiles
    the module's source once per method at import: about 1.5 s on a 2-core machine, every time a
    prompt is parsed in a new process. The checks only guard the argument types, and lina always
    passes strings, so the decorator is a no-op while inflect imports (as under ``python -O``)."""
    if "inflect" not in sys.modules:
        import typeguard

        checked = typeguard.typechecked
        typeguard.typechecked = _unchecked
        try:
            import inflect
        finally:
            typeguard.typechecked = checked
    return sys.modules["inflect"].engine()


def _unchecked(target: Any = None, **_: Any) -> Any:
    return target if target is not None else _unchecked


@lru_cache(maxsize=4096)
def relation_sense(predicate: str) -> RelationSense | None:
    """Meaning of a predicate as the parser writes it ("on top of", "rests on", "eaten by",
    "taller than", "more than"); None for wordings the lexicon does not know."""
    words = predicate.lower().split()
    if not words:
        return None
    if predicate.lower() in SPATIAL_PHRASES:
        return RelationSense(SPATIAL_PHRASES[predicate.lower()], SPATIAL)
    if words[-1] == "than" or (len(words) == 3 and words[0] == words[2] == "as"):
        return RelationSense(predicate.lower(), COMPARATIVE)
    if words[0] not in VERB_FORMS:
        return None
    base, forms = VERB_FORMS[words[0]]
    rest = " ".join(words[1:])
    if not rest:
        return RelationSense(base, CAUSAL)
    if rest in PASSIVE_MARKERS and "participle" in forms:
        return RelationSense(base, CAUSAL, passive=True)
    if rest not in SPATIAL_PHRASES:
        return None
    if base in POSTURE_VERBS:
        return RelationSense(SPATIAL_PHRASES[rest], SPATIAL)
    return RelationSense(f"{base} {SPATIAL_PHRASES[rest]}", CAUSAL)
