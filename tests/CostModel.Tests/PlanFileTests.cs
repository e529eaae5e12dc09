using System.Text.Json;
using System.Text.Json.Nodes;
using Planner.CostModel.Plans;
using Planner.CostModel.Pricing;
using Planner.CostModel.Specs;
using Xunit;

namespace Planner.CostModel.Tests;

/// <summary>
/// CONTRACTS.md "The plan object": what <see cref="PredictionJson.Plan"/> writes, <see cref="PlanFile"/> reads back
/// unchanged; a broken plan file is an <see cref="InputException"/> of one line naming the file and the key.
/// </summary>
public sealed class PlanFileTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), $"planner-planfile-{Guid.NewGuid():N}");

    public PlanFileTests() => Directory.CreateDirectory(_dir);

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string Write(string name, string text)
    {
        string path = Path.Combine(_dir, name);
        File.WriteAllText(path, text);
        return path;
    }

    public static TheoryData<ParallelPlan, string, string> Plans => new()
    {
        { new ParallelPlan(8, 12, 8, 1, 1, 1, 1536, 2048, 1, Recompute.Selective, true, Precision.Bf16), "gpt3-175b", "dgx-a100-80g" },
        { new ParallelPlan(1, 1, 128, 1, 3, 2, 512, 8192, 1, Recompute.None, false, Precision.Fp16), "llama3-8b", "dgx-h100" },
        { new ParallelPlan(4, 4, 4, 2, 0, 1, 64, 4096, 2, Recompute.Full, true, Precision.Fp8), "/some/dir/config.json", "my cluster" },
        { new ParallelPlan(2, 2, 2, 1, 2, 4, 32, 1024, 1, Recompute.None, false, Precision.Fp32), "gpt2", "local-cpu" },
        { new ParallelPlan(1, 2, 1, 1, 0, 1, 8, 512, 1, Recompute.Full, false, Precision.Tf32), "gpt2-medium", "dgx-v100" },
        {
            new ParallelPlan(8, 4, 4, 1, 1, 1, 512, 4096, 1, Recompute.None, true, Precision.Bf16,
                new StagePlan([11, 13, 13, 11], [Recompute.Full, Recompute.None, Recompute.None, Recompute.Selective])),
            "llama3-70b", "dgx-h100"
        },
        {
            new ParallelPlan(2, 4, 4, 1, 3, 1, 64, 4096, 1, Recompute.Full, true, Precision.Bf16, RecomputeLayers: 3, OptimizerOffload: 0.3),
            "llama3-8b", "dgx-h100"
        },
    };

    [Theory]
    [MemberData(nameof(Plans))]
    public void RoundTrip_WhatPredictionJsonWritesReadsBackAsTheSameRecord(ParallelPlan plan, string model, string cluster)
    {
        var o = PredictionJson.Plan(plan, model, cluster, PricingOptions.DefaultStack);
        string path = Write("plan.json", o.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));

        var (read, readModel, readCluster) = PlanFile.Read(path);

        Assert.Equal(plan, read);
        Assert.Equal(model, readModel);
        Assert.Equal(cluster, readCluster);
    }

    [Fact]
    public void ThePredictionIsIgnoredAndAnUnknownKeyRefused()
    {
        var plan = new ParallelPlan(8, 12, 8, 1, 1, 1, 1536, 2048, 1, Recompute.Selective, true, Precision.Bf16);
        var o = PredictionJson.Plan(plan, "gpt3-175b", "dgx-a100-80g", PricingOptions.DefaultStack);
        o["prediction"] = new JsonObject { ["step_time_s"] = 12.5, ["breakdown"] = new JsonObject { ["compute"] = 9.0 } };

        var (read, model, cluster) = PlanFile.Parse(o.ToJsonString(), "plan.json");

        Assert.Equal(plan, read);
        Assert.Equal("gpt3-175b", model);
        Assert.Equal("dgx-a100-80g", cluster);
        // A key no one reads (a misspelt one: 'optimiser') would train or price with the default it meant to change.
        o["optimiser"] = "lion";
        var e = Assert.Throws<InputException>(() => PlanFile.Parse(o.ToJsonString(), "plan.json"));
        Assert.StartsWith("plan.json: unknown key 'optimiser'", e.Message);
    }

    [Fact]
    public void Contract_keys_not_yet_honoured_are_refused_unless_they_say_the_default()
    {
        var o = JsonNode.Parse(Valid)!.AsObject();
        o["grad_compression"] = "none";
        Assert.Equal(1, PlanFile.Parse(o.ToJsonString(), "plan.json").Plan.Ep);
        o["grad_compression"] = "powersgd:4";
        Assert.Contains("'grad_compression'", Assert.Throws<InputException>(() => PlanFile.Parse(o.ToJsonString(), "plan.json")).Message);
        o.Remove("grad_compression");
        o["local_sgd"] = 8;
        Assert.Contains("'local_sgd'", Assert.Throws<InputException>(() => PlanFile.Parse(o.ToJsonString(), "plan.json")).Message);
    }

    private const string Valid = """
        { "model": "llama3-8b", "cluster": "dgx-h100", "tp": 4, "pp": 2, "dp": 8, "cp": 1, "zero": 1, "mbs": 1, "gbs": 64,
          "seq": 8192, "vpp": 1, "recompute": "selective", "sequence_parallel": true, "precision": "bf16" }
        """;

    [Fact]
    public void TheBaselineOfTheBadCasesIsValid()
    {
        var (plan, model, cluster) = PlanFile.Parse(Valid, "plan.json");
        Assert.Equal(new ParallelPlan(4, 2, 8, 1, 1, 1, 64, 8192, 1, Recompute.Selective, true, Precision.Bf16), plan);
        Assert.Equal(("llama3-8b", "dgx-h100"), (model, cluster));
    }

    /// <summary>The valid plan with one key's value replaced (the raw JSON text), or removed when null.</summary>
    private static string With(string key, string? raw)
    {
        var o = JsonNode.Parse(Valid)!.AsObject();
        if (raw is null)
            o.Remove(key);
        else
            o[key] = JsonNode.Parse(raw);
        return o.ToJsonString();
    }

    public static TheoryData<string> Keys => new()
    {
        "model", "cluster", "tp", "pp", "dp", "cp", "zero", "mbs", "gbs", "seq", "vpp", "recompute", "sequence_parallel", "precision",
    };

    [Theory]
    [MemberData(nameof(Keys))]
    public void AMissingKeyIsNamed(string key) => AssertBad(With(key, null), $"'{key}'", "missing");

    [Theory]
    [MemberData(nameof(Keys))]
    public void ANullKeyIsNamedAsMissing(string key) => AssertBad(With(key, "null"), $"'{key}'", "missing");

    [Theory]
    [InlineData("tp", "\"8\"")]           // a string where a number belongs
    [InlineData("gbs", "64.5")]          // not whole
    [InlineData("mbs", "true")]
    [InlineData("seq", "[2048]")]
    [InlineData("zero", "\"1\"")]
    [InlineData("sequence_parallel", "\"yes\"")]
    [InlineData("sequence_parallel", "1")]
    [InlineData("recompute", "2")]
    [InlineData("precision", "16")]
    [InlineData("model", "5")]
    [InlineData("cluster", "{\"name\": \"x\"}")]
    [InlineData("dp", "99999999999")]    // beyond a 32-bit integer
    public void AWrongTypeIsNamed(string key, string raw) => AssertBad(With(key, raw), $"'{key}'");

    [Theory]
    [InlineData("recompute", "\"partial\"")]
    [InlineData("precision", "\"fp9\"")]
    [InlineData("zero", "4")]
    [InlineData("zero", "-1")]
    public void ABadEnumValueIsNamed(string key, string raw) => AssertBad(With(key, raw), $"'{key}'", raw.Trim('"'));

    [Theory]
    [InlineData("optimizer_offload", "1.5")]
    [InlineData("optimizer_offload", "-0.1")]
    [InlineData("optimizer_offload", "\"half\"")]
    [InlineData("recompute_layers", "0")]
    [InlineData("recompute_layers", "2.5")]
    [InlineData("recompute_layers", "3")] // the baseline recomputes nothing: recompute_layers needs recompute full
    public void ABadOptionalKnobIsNamed(string key, string raw) => AssertBad(With(key, raw), $"'{key}'");

    [Theory]
    [InlineData("tp", "0")]
    [InlineData("pp", "-2")]
    [InlineData("dp", "0")]
    [InlineData("cp", "0")]
    [InlineData("mbs", "-1")]
    [InlineData("gbs", "0")]
    [InlineData("seq", "0")]
    [InlineData("vpp", "0")]
    [InlineData("tp", "20000000")]
    public void ANonPositiveOrHugeNumberIsNamed(string key, string raw) => AssertBad(With(key, raw), $"'{key}'", raw);

    [Theory]
    [InlineData("model", "\"\"")]
    [InlineData("cluster", "\"   \"")]
    [InlineData("model", "\"a\\nb\"")]
    public void AnEmptyOrMultiLineNameIsNamed(string key, string raw) => AssertBad(With(key, raw), $"'{key}'");

    [Fact]
    public void AGlobalBatchThatDoesNotSplitIntoMicroBatchesIsNamed() =>
        AssertBad(With("gbs", "60"), "'gbs'", "60"); // 60 is not a multiple of dp·mbs = 8

    [Fact]
    public void InterleavingWithoutAPipelineIsNamed() =>
        AssertBad(With("pp", "1").Replace("\"vpp\":1", "\"vpp\":2"), "'vpp'");

    [Theory]
    [InlineData("{\"model\": \"x\", \"tp\": }")]
    [InlineData("{\"model\": \"x\"")]
    [InlineData("")]
    [InlineData("plan")]
    public void InvalidJsonNamesTheFile(string json) => AssertBad(json, "invalid JSON");

    [Theory]
    [InlineData("[1, 2]")]
    [InlineData("\"plan\"")]
    [InlineData("42")]
    public void ANonObjectNamesTheFile(string json) => AssertBad(json, "JSON object");

    private const string Staged = """
        { "model": "llama3-8b", "cluster": "dgx-h100", "tp": 4, "pp": 2, "dp": 8, "cp": 1, "zero": 1, "mbs": 1, "gbs": 64,
          "seq": 8192, "vpp": 1, "recompute": "selective", "sequence_parallel": true, "precision": "bf16",
          "stages": { "layers": [15, 17], "recompute": ["full", "selective"], "groups": [0, 1] } }
        """;

    [Fact]
    public void StagesWithGroupsAreRead()
    {
        var (plan, _, _) = PlanFile.Parse(Staged, "plan.json");
        Assert.Equal(new StagePlan([15, 17], [Recompute.Full, Recompute.Selective], [0, 1]), plan.Stages);
        Assert.Equal(Recompute.Full, plan.RecomputeOf(0));
        Assert.Equal(1, plan.GroupOf(1));
    }

    [Theory]
    [InlineData("[15, 17]", "'stages'")]
    [InlineData("{\"recompute\": [\"full\", \"none\"]}", "'stages.layers'")]
    [InlineData("{\"layers\": [15, 17]}", "'stages.recompute'")]
    [InlineData("{\"layers\": [32], \"recompute\": [\"full\"]}", "'stages.layers'")]
    [InlineData("{\"layers\": [15, 17], \"recompute\": [\"full\", \"none\", \"none\"]}", "'stages.recompute'")]
    [InlineData("{\"layers\": [0, 32], \"recompute\": [\"full\", \"none\"]}", "'stages.layers'")]
    [InlineData("{\"layers\": [\"15\", 17], \"recompute\": [\"full\", \"none\"]}", "'stages.layers'")]
    [InlineData("{\"layers\": 32, \"recompute\": [\"full\", \"none\"]}", "'stages.layers'")]
    [InlineData("{\"layers\": [15, 17], \"recompute\": [\"full\", \"partial\"]}", "'stages.recompute'")]
    [InlineData("{\"layers\": [15, 17], \"recompute\": [\"full\", \"none\"], \"groups\": [0, -1]}", "'stages.groups'")]
    public void BadStagesAreNamed(string raw, string key) => AssertBad(Set(Staged, "stages", raw), key);

    [Fact]
    public void StagesWithInterleavingAreNamed() =>
        AssertBad(Set(Set(Staged, "vpp", "2"), "pp", "2"), "'stages'", "'vpp'");

    private static string Set(string json, string key, string raw)
    {
        var o = JsonNode.Parse(json)!.AsObject();
        o[key] = JsonNode.Parse(raw);
        return o.ToJsonString();
    }

    [Fact]
    public void AMissingFileIsNamed()
    {
        string path = Path.Combine(_dir, "no-such-plan.json");
        var e = Assert.Throws<InputException>(() => PlanFile.Read(path));
        AssertOneLine(e.Message);
        Assert.Contains(path, e.Message);
    }

    [Fact]
    public void ADirectoryIsNamed()
    {
        var e = Assert.Throws<InputException>(() => PlanFile.Read(_dir));
        AssertOneLine(e.Message);
        Assert.Contains(_dir, e.Message);
    }

    [Fact]
    public void ReadNamesThePathInParseErrors()
    {
        string path = Write("bad.json", With("precision", "\"fp9\""));
        var e = Assert.Throws<InputException>(() => PlanFile.Read(path));
        AssertOneLine(e.Message);
        Assert.Contains(path, e.Message);
        Assert.Contains("'precision'", e.Message);
    }

    private static void AssertBad(string json, params string[] names)
    {
        const string source = "some/dir/plan-file.json";
        var e = Assert.Throws<InputException>(() => PlanFile.Parse(json, source));
        AssertOneLine(e.Message);
        Assert.StartsWith(source + ": ", e.Message);
        foreach (var name in names)
            Assert.True(e.Message.Contains(name, StringComparison.Ordinal), $"'{e.Message}' does not name '{name}'");
    }

    private static void AssertOneLine(string message)
    {
        Assert.False(string.IsNullOrWhiteSpace(message));
        Assert.DoesNotContain('\n', message);
        Assert.DoesNotContain('\r', message);
    }
}
