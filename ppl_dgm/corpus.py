"""The embedded text corpus: short English sentences generated from a small grammar.

Source and licence: the grammar below was written for ppl-dgm and is part of its
source code (Apache-2.0, like the rest of the package); no third-party text is used
and nothing is downloaded.  :func:`embedded_sentences` expands it with a seeded
``numpy.random.default_rng``, so every install produces the same sentences.

The grammar gives every sentence three sentence-level factors that a latent code can
hold and that a left-to-right decoder only learns from the words it has already
produced: a *topic* (animals, kitchen, weather, music, travel: it picks the subject,
verb, object and place), a *mood* (every adjective and adverb of the sentence is
positive or every one is negative) and a *tense* (present or past, shared by all the
verbs).  One sentence in five is a question.  Sentences have 4 to 16 tokens
(punctuation included, 9.8 on average).  The default is 4000 sentences: 3763 distinct,
204 word types.

Example::

    from ppl_dgm.corpus import embedded_sentences
    embedded_sentences(3)
    # ['the baker gladly served a warm soup .', ...]
"""

from __future__ import annotations

import numpy as np

__all__ = ["DEFAULT_SIZE", "embedded_sentences"]

DEFAULT_SIZE = 4000

# One line a topic: subjects | verbs (base/present/past) | objects | places.
_TABLE = """
animals: the dog, the cat, the old horse, the little bird, the fox, a rabbit, the goat
  | chase/chases/chased, watch/watches/watched, follow/follows/followed, find/finds/found
  | the ball, a mouse, the stick, the farmer, the sheep, a butterfly
  | in the garden, on the farm, near the barn, by the river, under the tree
kitchen: my aunt, the cook, the baker, our neighbour, the chef, grandmother
  | bake/bakes/baked, cook/cooks/cooked, eat/eats/ate, serve/serves/served
  | fresh bread, a warm soup, the apple pie, sweet cakes, rice, the fish
  | in the kitchen, at the market, for dinner, every morning, at the table
weather: the wind, the rain, the storm, the sun, the snow, the fog
  | hit/hits/hit, cover/covers/covered, warm/warms/warmed, soak/soaks/soaked
  | the hills, the old town, the fields, our roof, the valley, the coast
  | all night, in the north, before noon, along the shore, in april
music: the band, the singer, my brother, the choir, the drummer, the pianist
  | play/plays/played, sing/sings/sang, write/writes/wrote, practise/practises/practised
  | a slow song, the old tune, loud music, a new album, the anthem, a short piece
  | on the stage, in the hall, after school, at the festival, on the radio
travel: the train, the pilot, our group, the driver, the ship, the old bus
  | reach/reaches/reached, leave/leaves/left, cross/crosses/crossed, visit/visits/visited
  | the city, the border, the station, the bridge, the island, the capital
  | at dawn, in winter, without delay, by evening, on time
"""


def _topics() -> dict[str, dict[str, list]]:
    entries: list[str] = []
    for line in _TABLE.strip().splitlines():
        if line.startswith("  |"):
            entries[-1] += line.strip()
        else:
            entries.append(line.strip())
    topics = {}
    for entry in entries:
        head, verbs, objects, places = entry.split("|")
        name, subjects = head.split(":")
        split = lambda field: [w.strip() for w in field.split(",")]  # noqa: E731
        topics[name.strip()] = dict(
            subjects=split(subjects), verbs=[tuple(v.split("/")) for v in split(verbs)],
            objects=split(objects), places=split(places))
    return topics


_TOPICS = _topics()
_ADJECTIVES = {"good": ["good", "lovely", "happy", "bright", "pleasant", "wonderful"],
               "bad": ["bad", "awful", "sad", "gloomy", "terrible", "dreadful"]}
_ADVERBS = {"good": ["gladly", "happily", "proudly", "calmly"],
            "bad": ["sadly", "angrily", "slowly", "wearily"]}
_BE = {"present": ("is", "does"), "past": ("was", "did")}


def _sentence(rng: np.random.Generator) -> str:
    pick = lambda items: items[int(rng.integers(len(items)))]  # noqa: E731
    topic = _TOPICS[pick(sorted(_TOPICS))]
    mood = pick(["good", "bad"])
    tense = pick(["present", "past"])
    be, do = _BE[tense]
    subj, obj, place = pick(topic["subjects"]), pick(topic["objects"]), pick(topic["places"])
    base, present, past = pick(topic["verbs"])
    verb = present if tense == "present" else past
    adj, adv = pick(_ADJECTIVES[mood]), pick(_ADVERBS[mood])
    adj2 = pick(_ADJECTIVES[mood])
    if rng.random() < 0.2:  # a question
        form = int(rng.integers(3))
        if form == 0:
            return f"{do} {subj} {base} {obj} {place} ?"
        if form == 1:
            return f"why {be} {subj} so {adj} ?"
        return f"{do} {subj} {adv} {base} {obj} ?"
    form = int(rng.integers(6))
    if form == 0:
        return f"{subj} {verb} {obj} {place} ."
    if form == 1:
        return f"{subj} {adv} {verb} {obj} ."
    if form == 2:
        return f"{subj} {be} {adj} ."
    if form == 3:
        day = "it is a" if tense == "present" else "it was a"
        return f"{day} {adj} day and {subj} {verb} {obj} {place} ."
    if form == 4:
        return f"i think {subj} {verb} {obj} and {be} {adj} ."
    return f"{subj} {adv} {verb} {obj} {place} , and {be} {adj2} ."


def embedded_sentences(n: int = DEFAULT_SIZE, *, seed: int = 0) -> list[str]:
    """``n`` sentences of the embedded grammar (lower case, words and punctuation
    separated by spaces), the same on every machine for the same ``seed``."""
    if n < 1:
        raise ValueError(f"n={n}: ask for at least one sentence")
    rng = np.random.default_rng(seed)
    return [_sentence(rng) for _ in range(n)]
