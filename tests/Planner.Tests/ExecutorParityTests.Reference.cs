using System.Text.Json.Nodes;
using Xunit;

namespace Planner.Cli.Tests;

/// <summary>The parity tests' fixture: the models' configs written out, the runs through `planner run`, and what each
/// run reported.</summary>
public sealed partial class ExecutorParityTests
{
    /// <summary>The tiny models, and the single-process runs every layout is compared with.</summary>
    public sealed class Reference : IDisposable
    {
        public string Dir { get; } = Path.Combine(Path.GetTempPath(), $"planner-parity-{Guid.NewGuid():N}");
        private readonly Dictionary<string, (double[] Loss, Dictionary<string, float[]> Params)> _single = [];

        /// <summary>The single-process run of <paramref name="model"/> at learning rate <paramref name="lr"/> for
        /// <paramref name="steps"/> steps (3 or 1): its losses and parameters (run on first use).</summary>
        public (double[] Loss, Dictionary<string, float[]> Params) Single(string model, double lr = 1e-3, int steps = 3)
        {
            string key = $"{model}/{lr}/{steps}";
            if (!_single.TryGetValue(key, out var single))
            {
                var (loss, p) = Run(model, steps == 3 ? "single" : $"single-{steps}", 1, 1, 1, 0, 1, "none", false, steps, lr);
                _single[key] = single = (loss, p[0]);
            }
            return single;
        }

        /// <summary>The single-process run with the plan keys <paramref name="keys"/> (named <paramref name="tuning"/>): its
        /// losses and parameters after 3 steps (run once per model and keys).</summary>
        public (double[] Loss, Dictionary<string, float[]> Params) SingleWithKeys(string model, string tuning, string keys)
        {
            string key = $"{model}/{tuning}";
            if (!_withKeys.TryGetValue(key, out var single))
            {
                var (loss, parameters) = Run(model, $"single-{tuning}", 1, 1, 1, 0, 1, "none", false, 3, keys: keys);
                _withKeys[key] = single = (loss, parameters[0]);
            }
            return single;
        }

        private readonly Dictionary<string, (double[] Loss, Dictionary<string, float[]> Params)> _withKeys = [];

        public Reference()
        {
            Directory.CreateDirectory(Dir);
            foreach (var (model, config) in ParityModels.Configs)
                File.WriteAllText(Path.Combine(Dir, model + ".json"), config);
        }

        public (double[] Loss, Dictionary<string, float[]>[] Params) Run(string model, string name, int tp, int pp, int dp, int zero,
            int vpp, string recompute, bool sp, int steps, double lr = 1e-3, string keys = "", int cp = 1)
        {
            string plan = Path.Combine(Dir, $"{model}-{name}-{lr}.json");
            // "full:k" is full recompute of the first k blocks of each chunk.
            string layers = recompute.Contains(':') ? $", \"recompute_layers\": {recompute.Split(':')[1]}" : "";
            File.WriteAllText(plan, $$"""
                {"model": "{{Path.Combine(Dir, model + ".json")}}", "cluster": "local-cpu", "tp": {{tp}}, "pp": {{pp}}, "dp": {{dp}}, "cp": {{cp}},
                 "zero": {{zero}}, "mbs": 2, "gbs": 8, "seq": 32, "vpp": {{vpp}}, "recompute": "{{recompute.Split(':')[0]}}",
                 "sequence_parallel": {{(sp ? "true" : "false")}}, "precision": "fp32"{{layers}}{{keys}}}
                """);
            string dump = Path.Combine(Dir, $"dump-{model}-{name}-{lr}");
            // Adam's epsilon at 1e-4 rather than 1e-8: with an epsilon far below a gradient's rounding (TP and DP sum
            // the same products in another order), the first update lr·g/(|g|+eps) turns that rounding into a
            // different sign for near-zero gradients; a larger epsilon keeps the update a smooth function of g, so the
            // parameters compare the gradients themselves.
            var (code, output, error) = Planner(["run", "--plan", plan, "--steps", steps.ToString(), "--warmup", "0", "--json", "--dump-params", dump, "--adam-eps", "1e-4", "--history", Path.Combine(Dir, "history.csv"),
                "--lr", lr.ToString(System.Globalization.CultureInfo.InvariantCulture)]);
            Assert.True(code == 0, $"{name}: exit {code}: {error}");
            var loss = JsonNode.Parse(output)!["measured"]!["loss"]!.AsArray().Select(v => (double)v!).ToArray();
            var ranks = Directory.GetFiles(dump, "rank-*.json").OrderBy(f => int.Parse(Path.GetFileNameWithoutExtension(f)[5..]))
                .Select(f => JsonNode.Parse(File.ReadAllText(f))!).ToArray();
            var parameters = ranks.Select(r => r["parameters"]!.AsObject().ToDictionary(kv => kv.Key, kv => kv.Value!.AsArray().Select(v => (float)v!).ToArray())).ToArray();
            Coordinates[name + model + lr] = ranks.Select(r => ((int)r["tp"]!, (int)r["pp"]!, (int)r["dp"]!)).ToArray();
            OverlappedReduces[name + model + lr] = JsonNode.Parse(output)!["measured"]!["overlapped_reduces_by_rank"]!.AsArray().Select(v => (int)v!).ToArray();
            var report = JsonNode.Parse(output)!;
            // No prediction for a layout of more ranks than the local-cpu cluster has GPUs.
            TrainableParameters[name + model + lr] = ((long)report["measured"]!["trainable_parameters"]!,
                report["predicted"] is { } p ? (double)p["trainable_parameters"]! : double.NaN);
            OptimizerState[name + model + lr] = (report["measured"]!["optimizer_state_bytes_by_rank"]!.AsArray().Select(v => (long)v!).ToArray(),
                report["predicted"] is { } q ? (double)q["memory_gib"]!["optimizer"]! * (1 << 30) : double.NaN);
            ParameterBytes[name + model + lr] = (report["measured"]!["parameter_bytes_by_rank"]!.AsArray().Select(v => (long)v!).ToArray(),
                report["predicted"] is { } w ? (double)w["memory_gib"]!["weights"]! * (1 << 30) : double.NaN);
            CpComm[name + model + lr] = ((double)report["measured"]!["breakdown"]!["cp_comm"]!,
                report["predicted"] is { } c ? (double)c["breakdown"]!["cp_comm"]! : double.NaN);
            return (loss, parameters);
        }

        /// <summary>Each run's seconds per step in context parallelism's ring: measured (the ranks' timers) and predicted.</summary>
        public Dictionary<string, (double Measured, double Predicted)> CpComm { get; } = [];

        public Dictionary<string, (int Tp, int Pp, int Dp)[]> Coordinates { get; } = [];

        /// <summary>Each run's optimizer state: measured on each rank, and predicted (bytes, the peak stage's).</summary>
        public Dictionary<string, (long[] Measured, double Predicted)> OptimizerState { get; } = [];

        /// <summary>Each run's parameter bytes: measured on each rank, and the predicted weights (bytes, the peak stage's).</summary>
        public Dictionary<string, (long[] Measured, double Predicted)> ParameterBytes { get; } = [];

        /// <summary>Each run's trainable parameters: measured (the ranks' stages, counted whole) and predicted.</summary>
        public Dictionary<string, (long Measured, double Predicted)> TrainableParameters { get; } = [];

        /// <summary>Each rank's reductions started during the backward in the last step of a run.</summary>
        public Dictionary<string, int[]> OverlappedReduces { get; } = [];

        public void Dispose()
        {
            try { Directory.Delete(Dir, recursive: true); } catch (IOException) { }
        }
    }
}
