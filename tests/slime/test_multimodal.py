"""--multimodal-keys end to end: image placeholders become message parts, the processor's chat template renders
them, the processor counts the image tokens, and SGLang gets the images as `image_data` PNG data URIs.

The processor is a real transformers one (LlavaProcessor with a CLIP image processor) built around the tiny
model's tokenizer, so no model is downloaded.
"""

from __future__ import annotations

import base64
import io
import shutil
from pathlib import Path

from PIL import Image
from transformers import AutoProcessor, AutoTokenizer, CLIPImageProcessor, LlavaProcessor

from rollout_runtime.engines.sim import start_sim_engine_thread
from tests.conftest import TINY_MODEL, write_jsonl
from tests.runtime.test_rollout_sim import sim_config
from tests.slime.test_slime_code_runs import batch, slime_cli

TEMPLATE = ("{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
            "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for part in message['content'] %}"
            "{% if part['type'] == 'image' %}<image>{% else %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}"
            "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def tiny_vlm(path: Path) -> Path:
    path.mkdir()
    for f in TINY_MODEL.iterdir():
        if f.is_file() and f.suffix != ".safetensors":
            shutil.copy(f, path / f.name)
    image_processor = CLIPImageProcessor(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28})
    LlavaProcessor(image_processor=image_processor, tokenizer=AutoTokenizer.from_pretrained(path), chat_template=TEMPLATE,
                   patch_size=14, vision_feature_select_strategy="default", num_additional_image_tokens=1
                   ).save_pretrained(path)
    return path


def test_images_reach_sglang_as_image_data(tmp_path):
    model = tiny_vlm(tmp_path / "vlm")
    colors = {"red": (255, 0, 0), "blue": (0, 0, 255)}
    rows = []
    for i, (name, rgb) in enumerate(colors.items()):
        image = tmp_path / f"{name}.png"
        Image.new("RGB", (40, 30), rgb).save(image)
        rows.append({"prompt": f"What is {i}+{i}? Look at <image> first.", "images": [str(image)], "label": str(2 * i)})
    data = write_jsonl(tmp_path / "mm.jsonl", rows)
    engine = start_sim_engine_thread(sim_config(record_requests=64))  # an engine: what arrives is what was sent
    try:
        proc = slime_cli(tmp_path, engine.url, data, "--hf-checkpoint", str(model), "--multimodal-keys",
                         '{"image": "images"}', "--rollout-batch-size", "2", "--n-samples-per-prompt", "2",
                         "--num-rollout", "1", "--rm-type", "math")
        assert proc.returncode == 0, proc.stderr
        requests = list(engine.value.recorded_requests)
    finally:
        engine.stop()
    processor = AutoProcessor.from_pretrained(model)
    samples = batch(tmp_path, 0)
    assert len(samples) == 4
    for s in samples:
        assert s.multimodal_inputs["images"] and s.prompt.endswith("<|im_start|>assistant\n") and "<image>" in s.prompt
        image = Image.open(s.multimodal_inputs["images"][0])
        expected = processor(text=[s.prompt], images=[image])["input_ids"][0]
        assert s.tokens[:len(s.tokens) - s.response_length] == list(expected)  # the processor's ids, image tokens too
        assert len(expected) > len(AutoTokenizer.from_pretrained(model).encode(s.prompt, add_special_tokens=False))
    assert len(requests) == 4 and all("input_ids" not in r for r in requests)
    sent = {}
    for r in requests:
        assert r["text"] in {s.prompt for s in samples} and len(r["image_data"]) == 1
        url = r["image_data"][0]
        assert url.startswith("data:image/png;base64,")
        img = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
        sent.setdefault(r["text"], set()).add(img.getpixel((0, 0)))
        assert img.size == (40, 30)
    assert sorted(c for colors_sent in sent.values() for c in colors_sent) == sorted(colors.values())
