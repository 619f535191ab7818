"""The narrative generator: chapters of travel, encounters and trades (reference section 3.5).

Protagonist (default "Arion") visits a location and meets a character per chapter, each (location, character)
pair unique; every chapter buys one new globally unique item ("{adjective} {material} {type}") and, with
probability 0.5, sells an older inventory item to the same character. Chapters are added while
`tokens("\\n\\n" + chapter)` still fits the budget (one count per chapter, no re-tokenising of the story).

Difference from the reference: the chapter that no longer fits is abridged instead of dropped (atmosphere,
conversation, farewell, event and reason sentences are removed one at a time until it fits, and the sale
sentence last). Its facts (location in the scene sentence, character, purchase) stay, so every task can still ask
about it. Without this the story could end up to one whole chapter (~150-300 tokens) short, below the 95 % floor
at short targets.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Set

from . import templates as T

PART_ORDER = ("scene", "encounter", "conversation", "buying", "selling", "farewell", "conclusion", "extra")
MAX_CHAPTERS = 2000


@dataclass
class Chapter:
    chapter_id: int
    location: str
    character: str
    event: str
    parts: Dict[str, List[str]] = field(default_factory=lambda: {name: [] for name in PART_ORDER})
    bought: List[str] = field(default_factory=list)
    sold: List[str] = field(default_factory=list)

    def text(self) -> str:
        return f"Chapter {self.chapter_id}:\n" + "".join(s for name in PART_ORDER for s in self.parts[name])

    def remove_purchases(self) -> List[str]:
        """Delete this chapter's purchase sentences; returns the items that are therefore never bought."""
        removed, self.bought, self.parts["buying"] = self.bought, [], []
        return removed

    def abridge(self) -> bool:
        """Remove one optional sentence (see the module docstring for the order); False when none is left."""
        for name, position in (("extra", -1), ("conversation", -1), ("conclusion", -1), ("farewell", -1),
                               ("scene", 2), ("scene", 1), ("selling", -1)):
            sentences = self.parts[name]
            if (name != "scene" and sentences) or (name == "scene" and len(sentences) > position):
                sentences.pop(position)
                if name == "selling":
                    self.sold = []
                return True
        return False

    def remove_sales_of(self, items: Set[str]) -> None:
        """Delete sale sentences of `items` (items whose purchase was removed cannot be sold later)."""
        keep = [(item, s) for item, s in zip(self.sold, self.parts["selling"]) if item not in items]
        self.sold, self.parts["selling"] = [i for i, _ in keep], [s for _, s in keep]


def _fill(template: str, **fields) -> str:
    return template.format(**{k: fields.get(k) for k in ("protagonist", "location", "event", "character", "item")})


def _unique_item(rng, seen: Set[str]) -> str:
    for _ in range(1000):
        item = f"{rng.choice(T.ITEM_ADJECTIVES)} {rng.choice(T.ITEM_MATERIALS)} {rng.choice(T.ITEM_TYPES)}"
        if item not in seen:
            seen.add(item)
            return item
    raise ValueError("could not find a unique item")


def _write_chapter(chapter: Chapter, rng, protagonist: str, conversation_sentences: int, items_seen: Set[str],
                   inventory: List[str]) -> None:
    f = dict(protagonist=protagonist, location=chapter.location, event=chapter.event, character=chapter.character)
    p = chapter.parts
    p["scene"] += [_fill(rng.choice(T.SCENE_INTRO), **f), _fill(rng.choice(T.REASON), **f),
                   _fill(rng.choice(T.EVENT), **f)]
    p["encounter"].append(_fill(rng.choice(T.CHARACTER_INTRO), **f))
    p["conversation"] += [_fill(t, **f) for t in rng.sample(T.CONVERSATION, conversation_sentences)]
    item = _unique_item(rng, items_seen)
    inventory.append(item)
    chapter.bought.append(item)
    p["buying"].append(_fill(rng.choice(T.BUYING), **f, item=item))
    older = [it for it in inventory if it != item]
    if older and rng.random() < 0.5:
        sold = rng.choice(older)
        inventory.remove(sold)
        chapter.sold.append(sold)
        p["selling"].append(_fill(rng.choice(T.SELLING), **f, item=sold))
    p["farewell"].append(_fill(rng.choice(T.FAREWELL), **f))
    p["conclusion"].append(_fill(rng.choice(T.CONCLUSION), **f))
    p["extra"] += [_fill(t, **f) for t in rng.sample(T.EXTRA, 1)]


class Narrative:
    """A growing story: `extend(budget)` adds chapters while the "\\n\\n"-joined text fits `budget` tokens
    (sum of per-chapter counts). Keeps the generator state (used pairs, items, inventory) so a task that edits
    chapters (story_filtering) can refill the freed room with further, consistent chapters."""

    def __init__(self, counter, rng, protagonist: str = "Arion", conversation_sentences: int = 3):
        self.counter, self.rng, self.protagonist = counter, rng, protagonist
        self.conversation_sentences = conversation_sentences
        self.chapters: List[Chapter] = []
        self.used_pairs: Set[tuple] = set()
        self.items_seen: Set[str] = set()
        self.inventory: List[str] = []

    def tokens(self) -> int:
        return sum(self.counter.count_many(["\n\n" + c.text() for c in self.chapters]))

    def extend(self, budget: int) -> "Narrative":
        rng, total = self.rng, self.tokens()
        while True:
            if len(self.chapters) >= MAX_CHAPTERS:
                raise ValueError(f"narrative reached {MAX_CHAPTERS} chapters; the target length is too large for "
                                 "the story tasks")
            for _ in range(100):
                pair = (rng.choice(T.LOCATIONS), rng.choice(T.CHARACTERS))
                if pair not in self.used_pairs:
                    self.used_pairs.add(pair)
                    break
            else:
                raise ValueError("could not find a unique (location, character) pair")
            chapter = Chapter(len(self.chapters) + 1, pair[0], pair[1], rng.choice(T.EVENTS))
            _write_chapter(chapter, rng, self.protagonist, self.conversation_sentences, self.items_seen,
                           self.inventory)
            cost = self.counter.count("\n\n" + chapter.text())
            if total + cost > budget:
                while chapter.abridge():
                    if total + self.counter.count("\n\n" + chapter.text()) <= budget:
                        self.chapters.append(chapter)
                        break
                else:  # not even the abridged chapter fits: forget its purchase and sale
                    self.items_seen.difference_update(chapter.bought)
                    for item in chapter.bought:
                        self.inventory.remove(item)
                    self.inventory += chapter.sold
                return self
            self.chapters.append(chapter)
            total += cost

    def text(self) -> str:
        return compile_narrative(self.chapters)


def generate_narrative(counter, budget: int, rng, protagonist: str = "Arion",
                       conversation_sentences: int = 3) -> List[Chapter]:
    """Chapters whose "\\n\\n"-joined text has at most about `budget` tokens."""
    return Narrative(counter, rng, protagonist, conversation_sentences).extend(budget).chapters


def compile_narrative(chapters: List[Chapter]) -> str:
    return "\n\n".join(chapter.text() for chapter in chapters)
