"""Chatterbox Multilingual (23 languages): the parts that differ from the English model.

languages.py   the 23 language ids, names, scripts, example sentences; the accent note
text.py        text front-end: punc_norm, lower-case + NFKD, kana / Cangjie / jamo steps, notes
chunking.py    per-script sentence splitting, chunk length in speaking time
alignment.py   the 0.1.7 alignment analyzer and the attention probe that feeds it
decoding.py    the multilingual T3 decoding loop (analyzer between guidance and sampling)
loading.py     the release's file set (.pt voice encoder and S3Gen, T3, tokenizer, Cangjie)
planning.py    a request's chunks, ids and token bounds for the Space's pipeline (models/tts.py)
tts.py         MultilingualTTS: text + language + voice -> 24 kHz audio (the reference's computation)
The voice encoder, S3Gen and the T3 architecture are the English modules.
"""
