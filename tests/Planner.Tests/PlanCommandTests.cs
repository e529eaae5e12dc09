using System.Globalization;
using System.Text.Json;
using CliEntry = global::Planner.Cli.Commands.Cli;
using Xunit;

namespace Planner.Cli.Tests;

/// <summary>CONTRACTS.md "plan --json": <c>{"plans": [plan, ...best first], "search": {"evaluated": N, "seconds": S}}</c>.</summary>
public sealed class PlanCommandTests
{
    // A small case: Llama-2 7B on one DGX A100 80GB node (8 GPUs).
    private const string Model = "llama2-7b";
    private const string Cluster = "dgx-a100-80g-1node";
    private const int Gpus = 8;
    private const int Gbs = 64;
    private const int Seq = 4096;
    private const string Precision = "bf16";

    private static readonly string[] SmallCase =
        ["--model", Model, "--cluster", Cluster, "--gbs", Gbs.ToString(CultureInfo.InvariantCulture), "--seq", Seq.ToString(CultureInfo.InvariantCulture), "--precision", Precision];

    private static (int Code, string Stdout, string Stderr) Run(params string[] args)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        int code = CliEntry.Run(args, stdout, stderr);
        return (code, stdout.ToString(), stderr.ToString());
    }

    private static JsonElement PlanJson(params string[] args)
    {
        var (code, stdout, stderr) = Run(["plan", "--json", .. args]);
        Assert.True(code == 0, $"plan exit code {code}; stderr: {stderr}");
        Assert.Equal("", stderr);
        using var doc = JsonDocument.Parse(stdout);
        return doc.RootElement.Clone();
    }

    private static readonly Lazy<JsonElement> Defaults = new(() => PlanJson());
    private static readonly Lazy<JsonElement> Small = new(() => PlanJson(SmallCase));

    private static void AssertRankedFittingPlans(JsonElement o)
    {
        var plans = o.GetProperty("plans");
        Assert.Equal(JsonValueKind.Array, plans.ValueKind);
        Assert.True(plans.GetArrayLength() >= 1, "no plan returned");
        double previous = 0;
        foreach (var plan in plans.EnumerateArray())
        {
            foreach (var key in new[] { "model", "cluster", "tp", "pp", "dp", "cp", "zero", "mbs", "gbs", "seq", "vpp", "recompute", "sequence_parallel", "precision", "prediction" })
                Assert.True(plan.TryGetProperty(key, out _), $"plan lacks '{key}'");
            var p = plan.GetProperty("prediction");
            Assert.True(p.GetProperty("fits").GetBoolean(), $"a ranked plan does not fit: {plan.GetRawText()}");
            Assert.True(p.GetProperty("peak_memory_gib").GetDouble() <= p.GetProperty("gpu_memory_gib").GetDouble(),
                "peak memory above the GPU's memory in a plan marked as fitting");
            double step = p.GetProperty("step_time_s").GetDouble();
            Assert.True(step > 0 && double.IsFinite(step), $"step time {step}");
            Assert.True(step >= previous, $"plans are not ranked by step time ascending: {step} after {previous}");
            previous = step;
        }
        var search = o.GetProperty("search");
        Assert.True(search.GetProperty("evaluated").GetInt32() > 0, "search.evaluated must be positive");
        Assert.True(search.GetProperty("evaluated").GetInt32() >= plans.GetArrayLength(), "more plans returned than evaluated");
        Assert.True(search.GetProperty("seconds").GetDouble() >= 0, "search.seconds must not be negative");
    }

    [Fact]
    public void DefaultsExitZeroWithRankedFittingPlans()
    {
        var o = Defaults.Value;
        AssertRankedFittingPlans(o);
        // The embedded default (CONTRACTS "./planner plan"): gpt3-175b on dgx-a100-80g, gbs 1536, seq 2048.
        var first = o.GetProperty("plans")[0];
        Assert.Equal("gpt3-175b", first.GetProperty("model").GetString());
        Assert.Equal("dgx-a100-80g", first.GetProperty("cluster").GetString());
        Assert.Equal(1536, first.GetProperty("gbs").GetInt32());
        Assert.Equal(2048, first.GetProperty("seq").GetInt32());
        Assert.True(o.GetProperty("plans").GetArrayLength() <= 10, "more than the default --top 10 plans");
    }

    [Fact]
    public void SmallCaseReturnsRankedFittingPlansOfTheRequest()
    {
        var o = Small.Value;
        AssertRankedFittingPlans(o);
        foreach (var plan in o.GetProperty("plans").EnumerateArray())
        {
            Assert.Equal(Model, plan.GetProperty("model").GetString());
            Assert.Equal(Cluster, plan.GetProperty("cluster").GetString());
            Assert.Equal(Gbs, plan.GetProperty("gbs").GetInt32());
            Assert.Equal(Seq, plan.GetProperty("seq").GetInt32());
            Assert.Equal(Precision, plan.GetProperty("precision").GetString());
            Assert.Equal(Gpus, plan.GetProperty("tp").GetInt32() * plan.GetProperty("pp").GetInt32() * plan.GetProperty("dp").GetInt32() * plan.GetProperty("cp").GetInt32());
            // The plan object carries its own prediction, whose plan is the same plan.
            var echoed = plan.GetProperty("prediction").GetProperty("plan");
            foreach (var key in new[] { "tp", "pp", "dp", "cp", "zero", "mbs", "gbs", "seq", "vpp" })
                Assert.Equal(plan.GetProperty(key).GetInt32(), echoed.GetProperty(key).GetInt32());
        }
    }

    [Fact]
    public void TopLimitsThePlansAndKeepsTheBest()
    {
        var top3 = PlanJson([.. SmallCase, "--top", "3"]);
        var plans = top3.GetProperty("plans");
        Assert.Equal(3, plans.GetArrayLength());
        for (int i = 0; i < 3; i++)
            Assert.Equal(Small.Value.GetProperty("plans")[i].GetRawText(), plans[i].GetRawText());
    }

    private static string[] PredictArgs(JsonElement plan)
    {
        var args = new List<string>
        {
            "predict", "--json",
            "--model", plan.GetProperty("model").GetString()!,
            "--cluster", plan.GetProperty("cluster").GetString()!,
            "--precision", plan.GetProperty("precision").GetString()!,
            "--recompute", plan.GetProperty("recompute").GetString()!,
        };
        foreach (var key in new[] { "tp", "pp", "dp", "cp", "zero", "mbs", "gbs", "seq", "vpp" })
        {
            args.Add("--" + key);
            args.Add(plan.GetProperty(key).GetInt32().ToString(CultureInfo.InvariantCulture));
        }
        if (plan.GetProperty("sequence_parallel").GetBoolean())
            args.Add("--sequence-parallel");
        return args.ToArray();
    }

    [Fact]
    public void PredictReproducesTheBestPlansPrice()
    {
        var best = Small.Value.GetProperty("plans")[0];
        var (code, stdout, stderr) = Run(PredictArgs(best));
        Assert.True(code == 0, $"predict of the best plan: exit code {code}; stderr: {stderr}");
        using var doc = JsonDocument.Parse(stdout);
        Assert.Equal(best.GetProperty("prediction").GetProperty("step_time_s").GetDouble(), doc.RootElement.GetProperty("step_time_s").GetDouble(), 9);
        Assert.Equal(best.GetProperty("prediction").GetProperty("peak_memory_gib").GetDouble(), doc.RootElement.GetProperty("peak_memory_gib").GetDouble(), 9);
    }

    [Fact]
    public void TheBestPlanIsNoSlowerThanRandomFittingPlans()
    {
        double bestStep = Small.Value.GetProperty("plans")[0].GetProperty("prediction").GetProperty("step_time_s").GetDouble();
        int[] tps = [1, 2, 4, 8];
        int[] pps = Enumerable.Range(1, Gpus).Where(p => Gpus % p == 0).ToArray();
        int[] vpps = [1, 2, 4];
        int[] mbss = [1, 2, 4, 8];
        string[] recomputes = ["none", "selective", "full"];
        int[] zeros = [0, 1, 3];

        var random = new Random(20240611);
        int compared = 0, attempts = 0, rejected = 0, tooBig = 0;
        var seen = new HashSet<string>();
        while (compared < 200 && attempts < 20000)
        {
            attempts++;
            int tp = tps[random.Next(tps.Length)];
            int pp = pps[random.Next(pps.Length)];
            int vpp = vpps[random.Next(vpps.Length)];
            int mbs = mbss[random.Next(mbss.Length)];
            string rc = recomputes[random.Next(recomputes.Length)];
            int zero = zeros[random.Next(zeros.Length)];
            var args = new List<string>
            {
                "predict", "--json", "--model", Model, "--cluster", Cluster,
                "--gbs", Gbs.ToString(CultureInfo.InvariantCulture), "--seq", Seq.ToString(CultureInfo.InvariantCulture), "--precision", Precision,
                "--tp", tp.ToString(CultureInfo.InvariantCulture), "--pp", pp.ToString(CultureInfo.InvariantCulture),
                "--vpp", vpp.ToString(CultureInfo.InvariantCulture), "--mbs", mbs.ToString(CultureInfo.InvariantCulture),
                "--recompute", rc, "--zero", zero.ToString(CultureInfo.InvariantCulture),
            };
            if (tp > 1)
                args.Add("--sequence-parallel");
            string key = string.Join(' ', args);
            if (!seen.Add(key))
                continue;

            var (code, stdout, stderr) = Run(args.ToArray());
            if (code == 2)
            {
                rejected++;
                continue;
            }
            Assert.True(code == 0, $"{key}: exit code {code}; stderr: {stderr}");
            using var doc = JsonDocument.Parse(stdout);
            var o = doc.RootElement;
            if (!o.GetProperty("fits").GetBoolean())
            {
                tooBig++;
                continue;
            }
            double step = o.GetProperty("step_time_s").GetDouble();
            Assert.True(bestStep <= step * (1 + 1e-9),
                $"plan's best step time {bestStep:R} s is slower than a random fitting plan's {step:R} s: {key}");
            compared++;
        }
        Assert.True(compared == 200, $"only {compared} random fitting plans in {attempts} attempts ({rejected} rejected, {tooBig} did not fit)");
    }

    [Fact]
    public void TableOutputExitsZeroAndListsPlans()
    {
        var (code, stdout, stderr) = Run(["plan", .. SmallCase, "--top", "3"]);
        Assert.True(code == 0, $"exit code {code}; stderr: {stderr}");
        Assert.Equal("", stderr);
        Assert.Contains(Model, stdout);
        Assert.Contains("searched", stdout);
    }

    [Fact]
    public void NoFittingPlanIsExit2OnOneLine()
    {
        // Llama 3 405B needs ~6.5 TB of weights, gradients and Adam state: far beyond one 8 x A100 80GB node (640 GB).
        var (code, stdout, stderr) = Run("plan", "--json", "--model", "llama3-405b", "--cluster", Cluster, "--gbs", "64", "--seq", "8192");
        Assert.True(code == 2, $"exit code {code}; stderr: {stderr}");
        Assert.Single(stderr.TrimEnd('\n', '\r').Split('\n'));
        Assert.DoesNotContain("Exception", stderr);
        Assert.Equal("", stdout);
    }
}
