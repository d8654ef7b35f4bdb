"""Drives a running node with the official `openai` package.

Usage: python openai_client.py BASE_URL
Prints one JSON object with what the SDK saw; the Rust test checks it.
"""
import json
import sys

import openai
from openai import OpenAI

base = sys.argv[1]
client = OpenAI(base_url=base + "/v1", api_key="not-needed", max_retries=0, timeout=30)
out = {"sdk_version": openai.__version__}

out["models"] = [m.id for m in client.models.list().data]

raw = client.chat.completions.with_raw_response.create(
    model="auto",
    messages=[{"role": "user", "content": "What should I feed my alpacas in winter?"}],
)
chat = raw.parse()
out["chat"] = {
    "content": chat.choices[0].message.content,
    "route": raw.headers.get("x-atmosphere-route"),
    "node": raw.headers.get("x-atmosphere-node"),
    "finish_reason": chat.choices[0].finish_reason,
}

stream = client.chat.completions.create(
    model="auto",
    messages=[{"role": "user", "content": "Write a Rust function that sorts a vector."}],
    stream=True,
)
pieces = []
for chunk in stream:
    if chunk.choices and chunk.choices[0].delta.content:
        pieces.append(chunk.choices[0].delta.content)
out["stream"] = {"chunks": len(pieces), "content": "".join(pieces)}

emb = client.embeddings.create(model="all-MiniLM-L6-v2", input=["llamas", "alpacas"])
out["embeddings"] = {"count": len(emb.data), "dim": len(emb.data[0].embedding), "model": emb.model}

# A WAV file's first bytes and silence.
wav = b"RIFF\x24\x08\0\0WAVEfmt \x10\0\0\0\x01\0\x01\0\x80\x3e\0\0" + bytes(1024)
heard = client.audio.transcriptions.create(model="auto", file=("clip.wav", wav, "audio/wav"), language="en")
out["transcription"] = {"text": heard.text, "bytes": len(wav)}

try:
    client.chat.completions.create(model="farm/does-not-exist", messages=[{"role": "user", "content": "hi"}])
    out["error"] = None
except openai.NotFoundError as e:
    out["error"] = {"status": e.status_code, "code": e.code, "message": e.message}

print(json.dumps(out))
