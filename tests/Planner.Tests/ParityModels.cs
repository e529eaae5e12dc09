using Planner.CostModel.Specs;

namespace Planner.Cli.Tests;

/// <summary>The tiny models of <see cref="ExecutorParityTests"/>: their HuggingFace configs, which the runs load, and
/// the same configs parsed, whose parameter shapes the checks of the ranks' slices read.</summary>
internal static class ParityModels
{
    /// <summary>The configs by model name: GPT-2 style (LayerNorm, biases, GeLU, learned positions, tied embeddings),
    /// Llama style (RMSNorm, SwiGLU, rotary, GQA, untied), a mixture of experts (<see cref="MoeRunTests.Config"/>), and
    /// Llama style with heads 32 wide over hidden 64 (head_dim, not 64 / 4 = 16: Q and the output projection 128 wide,
    /// K and V 64).</summary>
    public static readonly IReadOnlyDictionary<string, string> Configs = new Dictionary<string, string>
    {
        ["gpt"] = """{"model_type": "gpt2", "n_layer": 4, "n_embd": 64, "n_head": 4, "n_positions": 64, "vocab_size": 256, "n_inner": null, "tie_word_embeddings": true}""",
        ["llama"] = """{"num_hidden_layers": 4, "hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 128, "vocab_size": 256, "max_position_embeddings": 64, "hidden_act": "silu", "tie_word_embeddings": false}""",
        ["moe"] = MoeRunTests.Config,
        ["llama-hd"] = """{"num_hidden_layers": 4, "hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32, "intermediate_size": 128, "vocab_size": 256, "max_position_embeddings": 64, "hidden_act": "silu", "tie_word_embeddings": false}""",
    };

    /// <summary>A model's config, parsed.</summary>
    public static ModelSpec Spec(string model) => ModelLoader.Parse(Configs[model], model + ".json", model);
}
