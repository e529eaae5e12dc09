using Xunit;
using Planner.CostModel.Specs;

namespace Planner.CostModel.Tests;

/// <summary>
/// Parameter counts of the model presets against published counts, and the config parser's keys and errors.
/// </summary>
public class ModelSpecTests
{
    private static void AssertRelative(double expected, double actual, double tolerance)
    {
        double rel = Math.Abs(actual - expected) / Math.Abs(expected);
        Assert.True(rel <= tolerance, $"expected {expected:N0} within {tolerance:P2}, got {actual:N0} (off by {rel:P4})");
    }

    // ---- Presets against published counts ----

    [Fact]
    public void Gpt2Small_MatchesHuggingFaceCountExactly()
    {
        // HF openai-community/gpt2: 124,439,808 parameters. By hand (h = 768, l = 12, V = 50257, n_positions = 1024):
        //   wte + wpe        = 50257·768 + 1024·768                         = 39,383,808
        //   per block        = attn 4h² + 4h + mlp 8h² + 5h + 2 LayerNorms 4h = 12h² + 13h = 7,087,872
        //   12 blocks        = 85,054,464; final LayerNorm 2h = 1,536; LM head tied.
        Assert.Equal(39_383_808L + 12 * 7_087_872L + 1_536L, 124_439_808L);
        Assert.Equal(124_439_808L, ModelLoader.Load("gpt2").TotalParams);
    }

    [Theory]
    [InlineData("gpt2-medium", 354.8e6)]
    [InlineData("gpt2-large", 774.0e6)]
    [InlineData("gpt2-xl", 1557.6e6)]
    public void Gpt2Family_MatchesPublishedCounts(string preset, double published)
    {
        AssertRelative(published, ModelLoader.Load(preset).TotalParams, 0.005);
    }

    /// <summary>BLOOM's 176,247M parameters (BLOOM paper, Table 3); the preset writes ALiBi as 29M learned positions.</summary>
    [Fact]
    public void Bloom176b_MatchesPublishedCount() => AssertRelative(176_247e6, ModelLoader.Load("bloom-176b").TotalParams, 0.005);

    [Fact]
    public void Llama3_8b_MatchesHuggingFaceCountExactly()
    {
        // h = 4096, l = 32, 8 KV heads of 128 (kv dim 1024), ffn 14336, V = 128256, untied.
        //   attention 4096·(4096 + 2·1024) + 4096² = 41,943,040; SwiGLU 3·4096·14336 = 176,160,768; RMSNorms 2·4096
        //   block = 218,112,000; 32 blocks = 6,979,584,000; embedding + LM head 2·128256·4096 = 1,050,673,152; final norm 4096.
        Assert.Equal(6_979_584_000L + 1_050_673_152L + 4_096L, 8_030_261_248L);
        Assert.Equal(8_030_261_248L, ModelLoader.Load("llama3-8b").TotalParams);
    }

    [Fact]
    public void Llama2_7b_MatchesHuggingFaceCountExactly()
    {
        // h = 4096, l = 32, MHA, ffn 11008, V = 32000: block 4h² + 3·h·11008 + 2h = 202,383,360.
        Assert.Equal(32 * 202_383_360L + 2 * 32_000L * 4096 + 4_096L, 6_738_415_616L);
        Assert.Equal(6_738_415_616L, ModelLoader.Load("llama2-7b").TotalParams);
    }

    [Fact]
    public void Llama3_70b_MatchesHuggingFaceCountExactly()
    {
        Assert.Equal(70_553_706_496L, ModelLoader.Load("llama3-70b").TotalParams);
    }

    [Fact]
    public void Llama2_70b_MatchesPublishedCount()
    {
        AssertRelative(68.98e9, ModelLoader.Load("llama2-70b").TotalParams, 0.001);
    }

    [Fact]
    public void Llama3_405b_MatchesPublishedCount()
    {
        AssertRelative(405.85e9, ModelLoader.Load("llama3-405b").TotalParams, 0.001);
    }

    [Fact]
    public void Gpt3_175b_MatchesPublishedCount()
    {
        AssertRelative(174.6e9, ModelLoader.Load("gpt3-175b").TotalParams, 0.005);
    }

    [Fact]
    public void Mixtral_TotalExact_ActiveMatchesPublished()
    {
        // Per block: attention 41,943,040 + 8 experts · 176,160,768 + router 4096·8 + norms 8192 = 1,451,270,144.
        // 32 blocks + embedding and LM head 2·32000·4096 + final norm 4096.
        Assert.Equal(32 * 1_451_270_144L + 262_144_000L + 4_096L, 46_702_792_704L);
        var m = ModelLoader.Load("mixtral-8x7b");
        Assert.Equal(46_702_792_704L, m.TotalParams);
        Assert.True(m.IsMoe);
        Assert.Equal(8, m.Experts);
        Assert.Equal(2, m.ExpertsPerToken);
        // Active: 6 of 8 experts idle per token: 46,702,792,704 − 32·6·176,160,768 = 12,879,925,248.
        AssertRelative(12.88e9, m.ActiveParams, 0.001);
        Assert.Equal(46_702_792_704L - 32L * 6 * 176_160_768L, m.ActiveParams);
    }

    // ---- Mixture-of-experts, MLA, multi-token prediction and sliding windows (shared/validation/models) ----

    [Theory]
    // Published totals and active counts: DeepSeek-V3 technical report (671B total, 37B activated per token);
    // Qwen3 technical report (235B / 22B, 30.5B / 3.3B); Kimi K2 model card (1.04T total, 32.6B activated);
    // OpenAI gpt-oss model card (116.83B total; 5.13B active, which counts the unembedding but not the embedding).
    [InlineData("deepseek-v3-nomtp", 671e9, 37e9, 0.02)]
    [InlineData("qwen3-235b-a22b", 235e9, 22e9, 0.03)]
    [InlineData("qwen3-30b-a3b", 30.5e9, 3.3e9, 0.02)]
    [InlineData("kimi-k2", 1.04e12, 32.6e9, 0.02)]
    public void MoePresets_MatchPublishedTotalAndActive(string preset, double total, double active, double tolerance)
    {
        var m = ModelLoader.Load(preset);
        Assert.True(m.IsMoe);
        AssertRelative(total, m.TotalParams, tolerance);
        AssertRelative(active, m.ActiveParams, tolerance);
    }

    [Fact]
    public void GptOss120b_MatchesModelCard()
    {
        var m = ModelLoader.Load("gpt-oss-120b");
        AssertRelative(116.83e9, m.TotalParams, 0.005);
        // OpenAI counts the unembedding among the active parameters but not the embedding.
        AssertRelative(5.13e9, m.ActiveParams - (long)m.Vocab * m.Hidden, 0.01);
        Assert.Equal(64, m.HeadDim); // head_dim 64 with hidden 2880 and 64 heads: not hidden / heads
        Assert.Equal(18, Enumerable.Range(0, m.Layers).Count(l => m.WindowOf(l) == 128));
        Assert.Equal(0, m.WindowOf(1));
        Assert.Equal(new LayerKind(true, 128), m.KindOf(0));
        Assert.Equal(2, m.Kinds.Count);
    }

    [Fact]
    public void DeepSeekV3_DenseFirstBlocks_MlaAndMtp()
    {
        var m = ModelLoader.Load("deepseek-v3");
        var plain = ModelLoader.Load("deepseek-v3-nomtp");
        Assert.False(m.IsMoeLayer(2));
        Assert.True(m.IsMoeLayer(3));
        Assert.Equal(58, m.Moe!.MoeLayers);
        Assert.Equal(2048, m.Moe.SharedFfn); // one shared expert of moe_intermediate_size
        Assert.Equal(192, m.QkHeadDim);
        Assert.Equal(128, m.HeadDim);
        // MLA by hand: q 7168·1536 + 1536 + 1536·128·192; kv 7168·(512 + 64) + 512 + 512·128·(128 + 128); out 128·128·7168.
        long mla = 7168L * 1536 + 1536 + 1536L * 128 * 192 + 7168L * 576 + 512 + 512L * 128 * 256 + 128L * 128 * 7168;
        Assert.Equal(mla, m.AttentionParams);
        // The MTP module (DeepSeek's 14B counts its copies of the embedding and head, shared in training): two input
        // norms, the 2h -> h projection, one MoE block and its output norm.
        Assert.Equal(m.TotalParams - plain.TotalParams, m.MtpModuleParams);
        Assert.Equal(3 * 7168L + 2L * 7168 * 7168 + m.LayerParamsOf(new LayerKind(true, 0)), m.MtpModuleParams);
        AssertRelative(14e9 - 2 * 129280.0 * 7168, m.MtpModuleParams, 0.05);
        Assert.Equal(plain.ActiveParams, m.ActiveParams);
    }

    [Fact]
    public void Parse_MoeKeys_SharedExpertsDenseFirstAndFrequency()
    {
        const string json = """
            { "num_hidden_layers": 6, "hidden_size": 256, "num_attention_heads": 4, "num_key_value_heads": 4,
              "intermediate_size": 1024, "moe_intermediate_size": 128, "n_routed_experts": 8, "num_experts_per_tok": 2,
              "n_shared_experts": 2, "first_k_dense_replace": 1, "moe_layer_freq": 2, "vocab_size": 1000,
              "max_position_embeddings": 512 }
            """;
        var m = ModelLoader.Parse(json, "moe.json", "x");
        // Blocks 2 and 4 are MoE (l >= 1 and l % 2 == 0), the others dense.
        Assert.Equal(new[] { false, false, true, false, true, false }, Enumerable.Range(0, 6).Select(m.IsMoeLayer));
        long dense = 3L * 256 * 1024, expert = 3L * 256 * 128, shared = 3L * 256 * 256;
        Assert.Equal(shared, m.SharedExpertParams);
        long attention = 4L * 256 * 256, norms = 2 * 256;
        Assert.Equal(attention + norms + dense, m.LayerParamsOf(new LayerKind(false, 0)));
        Assert.Equal(attention + norms + 8 * expert + shared + 256 * 8, m.LayerParamsOf(new LayerKind(true, 0)));
        long total = 4 * (attention + norms + dense) + 2 * (attention + norms + 8 * expert + shared + 256 * 8) + 2L * 1000 * 256 + 256;
        Assert.Equal(total, m.TotalParams);
        Assert.Equal(total - 2 * 6 * expert, m.ActiveParams);
        Assert.Equal(8L * expert, m.ExpertParamsOf(2, 1));
        Assert.Equal(0, m.ExpertParamsOf(3, 1));
    }

    [Fact]
    public void Parse_MoeLayerFreqList_AndSharedIntermediateSize()
    {
        const string json = """
            { "num_hidden_layers": 4, "hidden_size": 256, "num_attention_heads": 4, "intermediate_size": 512,
              "num_experts": 4, "num_experts_per_tok": 1, "shared_expert_intermediate_size": 384,
              "moe_layer_freq": [0, 1, 1, 0], "vocab_size": 1000, "max_position_embeddings": 512 }
            """;
        var m = ModelLoader.Parse(json, "moe.json", "x");
        Assert.Equal(new[] { false, true, true, false }, Enumerable.Range(0, 4).Select(m.IsMoeLayer));
        Assert.Equal(512, m.Moe!.ExpertFfn); // no moe_intermediate_size: the experts are intermediate_size wide
        Assert.Equal(384, m.Moe.SharedFfn);
    }

    [Fact]
    public void Parse_HeadsThatDoNotDivideTheHiddenSize_AreHiddenOverHeadsWide()
    {
        // 2560 over 24 heads (no head_dim): Megatron makes each head 2560 // 24 = 106 wide.
        var m = ModelLoader.Parse("""
            {"num_hidden_layers": 4, "hidden_size": 2560, "num_attention_heads": 24, "intermediate_size": 10240,
             "vocab_size": 32000, "max_position_embeddings": 2048}
            """, "odd.json", "odd");
        Assert.Equal(106, m.HeadDim);
        Assert.Equal(2560L * (3 * 24 * 106) + 24L * 106 * 2560, m.AttentionParams);
        var e = Assert.Throws<InputException>(() => ModelLoader.Parse("""
            {"num_hidden_layers": 4, "hidden_size": 16, "num_attention_heads": 32, "intermediate_size": 64,
             "vocab_size": 32000, "max_position_embeddings": 2048}
            """, "narrow.json", "narrow"));
        Assert.Contains("narrow.json", e.Message);
        Assert.Contains("head_dim", e.Message);
    }

    [Fact]
    public void Parse_HeadDim_LetsHiddenDifferFromHeadsTimesHeadWidth()
    {
        // Qwen3-30B-A3B: hidden 2048, 32 heads of 128 (4096 wide queries).
        var m = ModelLoader.Load("qwen3-30b-a3b");
        Assert.Equal(128, m.HeadDim);
        Assert.Equal(2048L * (4096 + 2 * 512) + 4096L * 2048, m.AttentionParams);
    }

    [Fact]
    public void Parse_SlidingWindowWithoutLayerTypes_AllBlocks_UnlessDisabled()
    {
        const string json = """
            { "num_hidden_layers": 3, "hidden_size": 256, "num_attention_heads": 4, "intermediate_size": 512,
              "vocab_size": 1000, "max_position_embeddings": 8192, "sliding_window": 1024 }
            """;
        var m = ModelLoader.Parse(json, "w.json", "x");
        Assert.All(Enumerable.Range(0, 3), l => Assert.Equal(1024, m.WindowOf(l)));
        var off = ModelLoader.Parse(json.Replace("\"sliding_window\"", "\"use_sliding_window\": false, \"sliding_window\""), "w.json", "x");
        Assert.Null(off.Window);
    }

    [Fact]
    public void Parse_GptStyleWithLlamaKeys_LayerNormBiasesLearnedPositions()
    {
        var m = ModelLoader.Load("gpt3-5b");
        Assert.Equal(NormKind.LayerNorm, m.Norm);
        Assert.Equal(PositionKind.Learned, m.Positions);
        Assert.True(m.Biases);
        Assert.Equal(MlpKind.Gelu, m.Mlp);
        Assert.True(m.Dropout, "NeMo's GPT-3 drops out at 0.1 unless the file says otherwise");
        Assert.False(ModelLoader.Load("llama3-8b").Dropout);
        var narayanan = 12.0 * 24 * 4096 * 4096 * (1 + 13.0 / (12 * 4096) + (51200.0 + 2048) / (12 * 24 * 4096));
        AssertRelative(narayanan, m.TotalParams, 0.001);
    }

    [Theory]
    [InlineData(""" "num_local_experts": 8, "num_experts": 4, "num_experts_per_tok": 2 """, "num_experts")]
    [InlineData(""" "num_local_experts": 8, "num_experts_per_tok": 9 """, "num_experts_per_tok")]
    [InlineData(""" "num_local_experts": 8, "num_experts_per_tok": 2, "moe_layer_freq": [1, 0] """, "moe_layer_freq")]
    [InlineData(""" "num_local_experts": 8, "num_experts_per_tok": 2, "first_k_dense_replace": 4 """, "first_k_dense_replace")]
    [InlineData(""" "kv_lora_rank": 64, "qk_nope_head_dim": 32, "v_head_dim": 32 """, "qk_rope_head_dim")]
    [InlineData(""" "sliding_window": 16, "layer_types": ["sliding_attention"] """, "layer_types")]
    [InlineData(""" "layer_types": ["sliding_attention", "full_attention", "full_attention", "full_attention"] """, "sliding_window")]
    [InlineData(""" "head_dim": 0 """, "head_dim")]
    public void Parse_BadMoeMlaWindowKeys_NameTheKey(string extra, string key)
    {
        string json = $$"""
            { "num_hidden_layers": 4, "hidden_size": 256, "num_attention_heads": 4, "intermediate_size": 512,
              "vocab_size": 1000, "max_position_embeddings": 512, {{extra}} }
            """;
        var e = Assert.Throws<InputException>(() => ModelLoader.Parse(json, "bad.json", "x"));
        Assert.Contains(key, e.Message);
        Assert.Contains("bad.json", e.Message);
    }

    [Fact]
    public void DenseModel_ActiveEqualsTotal()
    {
        var m = ModelLoader.Load("llama3-8b");
        Assert.Equal(m.TotalParams, m.ActiveParams);
    }

    public static TheoryData<string> MegatronPresets => new()
    {
        "megatron-1.7b", "megatron-3.6b", "megatron-7.5b", "megatron-18b", "megatron-39b", "megatron-76b",
        "megatron-145b", "megatron-310b", "megatron-530b", "megatron-1t", "megatron-22b", "megatron-175b",
    };

    [Theory]
    [MemberData(nameof(MegatronPresets))]
    public void MegatronPresets_MatchNarayananFormula(string preset)
    {
        var m = ModelLoader.Load(preset);
        Assert.True(m.TiedEmbeddings);
        Assert.Equal(4 * m.Hidden, m.Ffn);
        double l = m.Layers, h = m.Hidden, v = m.Vocab, s = m.MaxSeq;
        // Narayanan et al. 2021, Sec. 5.1: P = 12·l·h²·(1 + 13/(12h) + (V + s)/(12·l·h)).
        double p = 12 * l * h * h * (1 + 13 / (12 * h) + (v + s) / (12 * l * h));
        AssertRelative(p, m.TotalParams, 0.001);
    }

    [Fact]
    public void PresetNames_ListsEveryModelFile()
    {
        var names = ModelLoader.PresetNames;
        foreach (var n in new[] { "gpt2", "llama3-8b", "mixtral-8x7b", "megatron-1t" })
            Assert.Contains(n, names);
        Assert.Equal(names.Order(StringComparer.Ordinal), names);
    }

    // ---- Parse on inline JSON ----

    [Fact]
    public void Parse_Gpt2Keys()
    {
        const string json = """
            { "n_layer": 6, "n_embd": 512, "n_head": 8, "n_positions": 256, "vocab_size": 1000,
              "n_inner": 1536, "activation_function": "gelu_new", "tie_word_embeddings": false,
              "some_other_key": [1, 2, 3] }
            """;
        var m = ModelLoader.Parse(json, "inline.json", "tiny");
        Assert.Equal("tiny", m.Name);
        Assert.Equal(6, m.Layers);
        Assert.Equal(512, m.Hidden);
        Assert.Equal(8, m.Heads);
        Assert.Equal(8, m.KvHeads);
        Assert.Equal(64, m.HeadDim);
        Assert.Equal(1536, m.Ffn);
        Assert.Equal(1000, m.Vocab);
        Assert.Equal(256, m.MaxSeq);
        Assert.Equal(MlpKind.Gelu, m.Mlp);
        Assert.Equal(NormKind.LayerNorm, m.Norm);
        Assert.Equal(PositionKind.Learned, m.Positions);
        Assert.True(m.Biases);
        Assert.False(m.TiedEmbeddings);
        Assert.False(m.IsMoe);
        // By hand: embeddings (1000 + 256)·512 = 643,072; block 4h²+4h + 2·h·1536 + 1536 + h + 4h = 1,050,624 + 1,572,864 + 2,048 + 2,048 = 2,627,584;
        // final LayerNorm 1024; untied LM head 1000·512 = 512,000.
        long block = 4L * 512 * 512 + 4 * 512 + 2L * 512 * 1536 + 1536 + 512 + 4 * 512;
        Assert.Equal(2_627_584L, block);
        Assert.Equal(643_072L + 6 * block + 1024 + 512_000L, m.TotalParams);
    }

    [Fact]
    public void Parse_Gpt2_NullInnerMeansFourTimesHidden_AndTiedByDefault()
    {
        const string json = """{ "n_layer": 2, "n_embd": 384, "n_head": 6, "n_positions": 128, "vocab_size": 500, "n_inner": null }""";
        var m = ModelLoader.Parse(json, "inline.json", "t");
        Assert.Equal(4 * 384, m.Ffn);
        Assert.True(m.TiedEmbeddings);
        Assert.Equal(0, m.LmHeadParams);
    }

    [Fact]
    public void Parse_LlamaKeys_WithGqa()
    {
        const string json = """
            { "num_hidden_layers": 4, "hidden_size": 1024, "num_attention_heads": 16, "num_key_value_heads": 4,
              "intermediate_size": 2816, "vocab_size": 32000, "max_position_embeddings": 2048, "hidden_act": "silu",
              "tie_word_embeddings": false, "rope_theta": 10000.0 }
            """;
        var m = ModelLoader.Parse(json, "inline.json", "llama-tiny");
        Assert.Equal(4, m.Layers);
        Assert.Equal(1024, m.Hidden);
        Assert.Equal(16, m.Heads);
        Assert.Equal(4, m.KvHeads);
        Assert.Equal(64, m.HeadDim);
        Assert.Equal(256, m.KvDim);
        Assert.Equal(2816, m.Ffn);
        Assert.Equal(MlpKind.SwiGlu, m.Mlp);
        Assert.Equal(NormKind.RmsNorm, m.Norm);
        Assert.Equal(PositionKind.Rotary, m.Positions);
        Assert.False(m.Biases);
        Assert.False(m.TiedEmbeddings);
        // Attention: q 1024² + k, v 2·1024·256 + o 1024² = 2,621,440.
        Assert.Equal(2_621_440L, m.AttentionParams);
        // Block: attention + SwiGLU 3·1024·2816 + 2 RMSNorms 2·1024.
        long block = 2_621_440L + 3L * 1024 * 2816 + 2 * 1024;
        Assert.Equal(block, m.LayerParams);
        Assert.Equal(4 * block + 2L * 32000 * 1024 + 1024, m.TotalParams);
    }

    [Fact]
    public void Parse_Llama_MissingKvHeadsMeansMha()
    {
        const string json = """
            { "num_hidden_layers": 2, "hidden_size": 512, "num_attention_heads": 8,
              "intermediate_size": 1024, "vocab_size": 1000, "max_position_embeddings": 512 }
            """;
        var m = ModelLoader.Parse(json, "inline.json", "x");
        Assert.Equal(8, m.KvHeads);
        Assert.Equal(MlpKind.SwiGlu, m.Mlp); // hidden_act defaults to silu
    }

    [Fact]
    public void Parse_MixtralKeys()
    {
        const string json = """
            { "num_hidden_layers": 2, "hidden_size": 512, "num_attention_heads": 8, "num_key_value_heads": 2,
              "intermediate_size": 1024, "vocab_size": 1000, "max_position_embeddings": 4096, "hidden_act": "silu",
              "num_local_experts": 4, "num_experts_per_tok": 2 }
            """;
        var m = ModelLoader.Parse(json, "inline.json", "moe");
        Assert.True(m.IsMoe);
        Assert.Equal(4, m.Experts);
        Assert.Equal(2, m.ExpertsPerToken);
        long expert = 3L * 512 * 1024;
        Assert.Equal(expert, m.MlpParamsPerExpert);
        Assert.Equal(512L * 4, m.RouterParams);
        long attention = 512L * (512 + 2 * 128) + 512L * 512;
        long block = attention + 4 * expert + 512 * 4 + 2 * 512;
        Assert.Equal(block, m.LayerParams);
        long total = 2 * block + 2L * 1000 * 512 + 512;
        Assert.Equal(total, m.TotalParams);
        Assert.Equal(total - 2L * (4 - 2) * expert, m.ActiveParams);
    }

    [Theory]
    [InlineData("""{ "n_embd": 512, "n_head": 8, "n_positions": 256, "vocab_size": 1000 }""", "n_layer")]
    [InlineData("""{ "n_layer": 2, "n_embd": 512, "n_positions": 256, "vocab_size": 1000 }""", "n_head")]
    [InlineData("""{ "n_layer": 2, "n_embd": 512, "n_head": 8, "n_positions": 256 }""", "vocab_size")]
    [InlineData("""{ "num_hidden_layers": 2, "hidden_size": 512, "intermediate_size": 1024, "vocab_size": 1000, "max_position_embeddings": 512 }""", "num_attention_heads")]
    [InlineData("""{ "num_hidden_layers": 2, "hidden_size": 512, "num_attention_heads": 8, "vocab_size": 1000, "max_position_embeddings": 512 }""", "intermediate_size")]
    [InlineData("""{ "num_hidden_layers": 2, "hidden_size": 512, "num_attention_heads": 8, "intermediate_size": 1024, "vocab_size": 1000 }""", "max_position_embeddings")]
    [InlineData("""{ "num_hidden_layers": 2, "hidden_size": 512, "num_attention_heads": 8, "intermediate_size": 1024, "vocab_size": 1000, "max_position_embeddings": 512, "num_local_experts": 4 }""", "num_experts_per_tok")]
    public void Parse_MissingRequiredKey_NamesKeyAndSource(string json, string key)
    {
        var e = Assert.Throws<InputException>(() => ModelLoader.Parse(json, "my/config.json", "x"));
        Assert.Contains($"'{key}'", e.Message);
        Assert.Contains("my/config.json", e.Message);
    }

    [Theory]
    [InlineData("""{ "n_layer": 2, "n_embd": 512, """)]
    [InlineData("not json at all")]
    [InlineData("""{ "n_layer": 2 "n_embd": 512 }""")]
    public void Parse_InvalidJson_NamesSource(string json)
    {
        var e = Assert.Throws<InputException>(() => ModelLoader.Parse(json, "broken.json", "x"));
        Assert.Contains("broken.json", e.Message);
    }

    [Fact]
    public void Parse_HiddenNotDivisibleByHeads_Gpt2Keys_HeadsRoundedDown()
    {
        const string json = """{ "n_layer": 2, "n_embd": 500, "n_head": 8, "n_positions": 256, "vocab_size": 1000 }""";
        Assert.Equal(62, ModelLoader.Parse(json, "odd.json", "x").HeadDim);
    }

    [Fact]
    public void Parse_HeadsNotDivisibleByKvHeads_Throws()
    {
        const string json = """
            { "num_hidden_layers": 2, "hidden_size": 512, "num_attention_heads": 8, "num_key_value_heads": 3,
              "intermediate_size": 1024, "vocab_size": 1000, "max_position_embeddings": 512 }
            """;
        Assert.Throws<InputException>(() => ModelLoader.Parse(json, "gqa.json", "x"));
    }

    [Fact]
    public void Parse_NonIntegerKey_NamesKey()
    {
        const string json = """{ "n_layer": 2.5, "n_embd": 512, "n_head": 8, "n_positions": 256, "vocab_size": 1000 }""";
        var e = Assert.Throws<InputException>(() => ModelLoader.Parse(json, "f.json", "x"));
        Assert.Contains("n_layer", e.Message);
        Assert.Contains("f.json", e.Message);
    }

    [Fact]
    public void Load_UnknownPreset_ListsPresets()
    {
        var e = Assert.Throws<InputException>(() => ModelLoader.Load("gpt-nonexistent"));
        Assert.Contains("gpt-nonexistent", e.Message);
        Assert.Contains("llama3-8b", e.Message);
    }
}
