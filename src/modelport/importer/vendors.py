"""The old system's online-API worker classes and the OpenAI-compatible endpoint of each vendor.

The old system reached every vendor through a hand-written worker class; almost every
vendor now offers an OpenAI-compatible endpoint, which modelport calls directly.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Vendor:
    label: str
    base_url: str | None  # the vendor's documented OpenAI-compatible base URL, if any
    credentials_note: str | None = None  # when the old credentials do not carry over as-is
    name: str | None = None  # the same vendor in modelport's vendors file, if it is there


OPENAI = Vendor("OpenAI", "https://api.openai.com/v1", name="openai")
ZHIPU = Vendor("Zhipu AI", "https://open.bigmodel.cn/api/paas/v4", name="zhipu")

OLD_PROVIDERS: dict[str, Vendor] = {
    "OpenAIWorker": OPENAI,
    # Azure's base URL contains the resource name; see convert.azure_base_url
    "AzureWorker": Vendor("Azure OpenAI", None),
    "ChatGLMWorker": ZHIPU,
    "ZhipuWorker": ZHIPU,
    "QwenWorker": Vendor("Alibaba DashScope (Qwen)",
                         "https://dashscope.aliyuncs.com/compatible-mode/v1", name="qwen"),
    "QianFanWorker": Vendor(
        "Baidu Qianfan", "https://qianfan.baidubce.com/v2",
        "Qianfan's OpenAI-compatible v2 API takes one API key from the Qianfan console "
        "(not the old api_key/secret_key pair), and model ids such as ernie-4.0-8k", "qianfan",
    ),
    "MiniMaxWorker": Vendor("MiniMax", "https://api.minimaxi.com/v1", name="minimax"),
    "XingHuoWorker": Vendor(
        "iFlytek Spark", "https://spark-api-open.xf-yun.com/v1",
        "Spark's OpenAI-compatible API takes the APIPassword shown in the Spark console "
        "(not the old APPID/APISecret/api_key), and model ids such as generalv3.5", "spark",
    ),
    "BaiChuanWorker": Vendor("Baichuan", "https://api.baichuan-ai.com/v1", name="baichuan"),
    "FangZhouWorker": Vendor(
        "Volcengine Ark (Fangzhou)", "https://ark.cn-beijing.volces.com/api/v3",
        "Ark's OpenAI-compatible API takes an Ark API key (not the old access/secret key "
        "pair) and the endpoint or model id as the model", "ark",
    ),
    "GeminiWorker": Vendor("Google Gemini",
                           "https://generativelanguage.googleapis.com/v1beta/openai"),
    "TianGongWorker": Vendor("Kunlun Tiangong (SkyWork)", None),
}


# The names the old configs gave these vendors' entries, for an entry without `provider`.
OLD_ENTRY_NAMES = {
    "openai-api": "OpenAIWorker", "azure-api": "AzureWorker", "zhipu-api": "ChatGLMWorker",
    "qwen-api": "QwenWorker", "qianfan-api": "QianFanWorker", "minimax-api": "MiniMaxWorker",
    "xinghuo-api": "XingHuoWorker", "baichuan-api": "BaiChuanWorker",
    "fangzhou-api": "FangZhouWorker", "gemini-api": "GeminiWorker",
    "tiangong-api": "TianGongWorker",
}


def old_provider(class_name: str | None) -> Vendor | None:
    return OLD_PROVIDERS.get(class_name) if class_name else None
