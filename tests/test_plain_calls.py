"""00_setup shows the plain transformers calls once, then says `chat` makes the same calls: check that it does."""

from __future__ import annotations

import torch

from molmo_nb_utils import INPUT_DIR, chat, load_image, user_message


def test_chat_answers_exactly_what_the_plain_transformers_calls_answer(tiny_model):
    model, processor = tiny_model
    image = load_image(INPUT_DIR / "cat.jpg")
    question = "Describe this image in two sentences."
    # The cell of 00_setup, as a reader would copy it.
    messages = [
        {"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": question}]}
    ]
    inputs = processor.apply_chat_template(
        messages, tokenize=True, add_generation_prompt=True, return_dict=True, return_tensors="pt"
    ).to(model.device)
    with torch.inference_mode():
        output = model.generate(**inputs, max_new_tokens=24, do_sample=False)
    new_tokens = output[0, inputs["input_ids"].shape[1] :]
    plain = processor.decode(new_tokens, skip_special_tokens=True)

    assert user_message(image, text=question) == messages[0]  # the same turn
    answer = chat(model, processor, [user_message(image, text=question)], max_new_tokens=24)
    assert answer.prompt_tokens == inputs["input_ids"].shape[1]  # the same prompt, image tokens included
    assert str(answer) == plain.strip() and len(new_tokens) > 0
    assert answer.images[0].size == image.size  # what chat adds: the answer knows what the model saw
