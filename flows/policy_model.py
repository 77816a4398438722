"""MLflow model from code: a seq2seq policy checkpoint as a summarizer (articles in, greedy summaries out).

`reporting.log_policy_model` logs this file with the checkpoint folder as the artifact "policy". It
needs only torch and transformers, so the registered model loads where pgg is not installed:
``mlflow.pyfunc.load_model("models:/pgg-summarization@champion").predict(["article text"])``.
"""

import mlflow
import torch
from mlflow.pyfunc import PythonModel


class Seq2SeqPolicyModel(PythonModel):
    def load_context(self, context):
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

        folder = context.artifacts["policy"]
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.model = AutoModelForSeq2SeqLM.from_pretrained(folder).eval()
        self.settings = dict(context.model_config or {})

    def predict(self, context, model_input: list[str], params=None) -> list[str]:
        prefix = self.settings.get("source_prefix", "")
        batch = self.tokenizer(
            [prefix + text for text in model_input],
            max_length=self.settings.get("max_source_tokens", 512),
            truncation=True,
            padding=True,
            return_tensors="pt",
        )
        generation, config = self.model.generation_config, self.model.config
        with torch.no_grad():
            output = self.model.generate(
                **batch,
                do_sample=False,
                num_beams=1,
                max_new_tokens=self.settings.get("max_new_tokens", 64),
                eos_token_id=generation.eos_token_id
                if generation.eos_token_id is not None
                else config.eos_token_id,
                pad_token_id=generation.pad_token_id
                if generation.pad_token_id is not None
                else config.pad_token_id,
            )
        return [text.strip() for text in self.tokenizer.batch_decode(output, skip_special_tokens=True)]


mlflow.models.set_model(Seq2SeqPolicyModel())
