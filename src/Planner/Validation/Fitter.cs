using MathNet.Numerics.LinearAlgebra;
using MathNet.Numerics.Optimization;
using Planner.CostModel.Pricing;
using Planner.CostModel.Specs;

namespace Planner.Cli.Validation;

/// <summary>A physical parameter the fit may move: its key as a cluster or GPU file spells it, and how it changes a case.</summary>
/// <param name="Key">Where the value goes, e.g. <c>gpus/b200.yaml: gemm_efficiency</c>.</param>
/// <param name="Initial">Its value before the fit (the preset's).</param>
/// <param name="Apply">The case with the parameter at a value.</param>
/// <param name="Upper">The largest value it may take (fractions: 1); the smallest is 0.</param>
public sealed record FitParameter(string Key, double Initial, Func<ValidationCase, double, ValidationCase> Apply, double Upper = 1);

/// <summary>The outcome of a fit: each parameter's value, and the rows priced with them.</summary>
public sealed record FitResult(IReadOnlyList<(FitParameter Parameter, double Value)> Values, IReadOnlyList<ValidationRow> Rows, int Evaluations);

/// <summary>
/// Fits the few physical parameters that the measured rows exercise, the same values for every row: each GPU's GEMM
/// efficiency in its low-precision formats (bf16 GEMMs keep the preset's efficiency, fitted on the published A100 runs),
/// the block-scaled formats' efficiency relative to per-tensor FP8, the experts' grouped-GEMM efficiency and the time a MoE
/// block's pass spends per local expert beyond its priced kernels, one value per regime (eager, or CUDA-graphed router and
/// dispatch: the row's stack says which). The all-to-all's efficiency is not fitted: the published
/// MoE runs do not tell it apart from the experts' overheads (fitted alongside, it runs to its bound with no better fit),
/// so it stays at the tier's collective efficiency. Least squares on the logarithm of predicted over measured step time (so 20 % fast and 20 % slow weigh
/// alike), by the Nelder–Mead simplex over each parameter's logit (every value stays within its bounds). Never a
/// correction per row.
/// </summary>
public static class Fitter
{
    /// <summary>
    /// Fits in two stages: the dense rows first, for what they measure (the GEMM efficiencies), then the MoE rows with
    /// those fixed, for the experts' parameters (and the GEMM efficiency of a GPU and format no dense row measured).
    /// </summary>
    public static FitResult FitInStages(IReadOnlyList<ValidationCase> cases)
    {
        var dense = cases.Where(c => !c.Model.IsMoe).ToList();
        var moe = cases.Where(c => c.Model.IsMoe).ToList();
        var values = new List<(FitParameter, double)>();
        int evaluations = 0;
        var fitted = cases;
        if (dense.Count > 0)
        {
            var first = Fit(dense, GemmParameters(dense));
            values.AddRange(first.Values);
            evaluations += first.Evaluations;
            fitted = Apply(cases, first.Values);
        }
        if (moe.Count > 0)
        {
            var measured = values.Select(v => v.Item1.Key).ToHashSet();
            var moeCases = fitted.Where(c => c.Model.IsMoe).ToList();
            var parameters = GemmParameters(moeCases).Where(p => !measured.Contains(p.Key)).Concat(ExpertParameters(moeCases)).ToList();
            var second = Fit(moeCases, parameters);
            values.AddRange(second.Values);
            evaluations += second.Evaluations;
            fitted = Apply(fitted, second.Values);
        }
        return new FitResult(values, Validator.Run(fitted), evaluations);
    }

    /// <summary>The cases with parameters at values.</summary>
    public static IReadOnlyList<ValidationCase> Apply(IReadOnlyList<ValidationCase> cases, IReadOnlyList<(FitParameter Parameter, double Value)> values) =>
        cases.Select(c =>
        {
            foreach (var (p, v) in values)
                c = p.Apply(c, v);
            return c;
        }).ToList();

    /// <summary>
    /// The GEMM efficiencies the cases exercise: each GPU's per-tensor FP8 efficiency relative to its bf16 curve (and the
    /// block-scaled formats' at one ratio to it, the same on every GPU), and a GPU's bf16 efficiency only where it runs no
    /// quantized row (else the preset's, fitted on the published A100 runs: FP8 rows cannot tell the two apart).
    /// </summary>
    public static IReadOnlyList<FitParameter> GemmParameters(IReadOnlyList<ValidationCase> cases)
    {
        var list = new List<FitParameter>();
        foreach (var group in cases.GroupBy(c => c.Cluster.Gpu.Name).OrderBy(g => g.Key, StringComparer.Ordinal))
        {
            string name = group.Key;
            var gpu = group.First().Cluster.Gpu;
            if (group.Any(c => c.Plan.Precision.IsQuantized()))
                list.Add(new($"gpus/{name}.yaml: quantized_gemm_efficiency.fp8", gpu.QuantizedEfficiency(Precision.Fp8),
                    (c, v) => c.Cluster.Gpu.Name == name ? WithGpu(c, c.Cluster.Gpu with { QuantizedGemmEfficiency = With(c.Cluster.Gpu.QuantizedGemmEfficiency, Precision.Fp8, v) }) : c,
                    Upper: 2));
            else
                list.Add(new($"gpus/{name}.yaml: gemm_efficiency", gpu.GemmEfficiency,
                    (c, v) => c.Cluster.Gpu.Name == name ? WithGpu(c, c.Cluster.Gpu with { GemmEfficiency = v }) : c));
        }
        foreach (var format in new[] { Precision.Mxfp8, Precision.Nvfp4 })
        {
            var users = cases.Where(c => c.Plan.Precision == format).ToList();
            if (users.Count == 0)
                continue;
            var gpu = users[0].Cluster.Gpu;
            list.Add(new($"quantized_gemm_efficiency.{format.Name()} / fp8", gpu.QuantizedEfficiency(format) / gpu.QuantizedEfficiency(Precision.Fp8),
                (c, v) => WithGpu(c, c.Cluster.Gpu with { QuantizedGemmEfficiency = With(c.Cluster.Gpu.QuantizedGemmEfficiency, format, v * c.Cluster.Gpu.QuantizedEfficiency(Precision.Fp8)) }),
                Upper: 2));
        }
        return list;
    }

    /// <summary>The mixture-of-experts parameters the cases exercise.</summary>
    public static IReadOnlyList<FitParameter> ExpertParameters(IReadOnlyList<ValidationCase> cases)
    {
        var list = new List<FitParameter>();
        var moe = cases.Where(c => c.Model.IsMoe).ToList();
        if (moe.Count == 0)
            return list;
        list.Add(new("grouped_gemm_efficiency", moe[0].Cluster.Gpu.GroupedGemmEfficiency,
            (c, v) => WithGpu(c, c.Cluster.Gpu with { GroupedGemmEfficiency = v })));
        // The time per local expert and pass in each regime the rows run (eager, or router and dispatch in CUDA graphs:
        // MoeProfile.Launch), the same value for every row of a regime.
        if (moe.Any(c => c.Software.Moe.Launch == MoeLaunch.Eager))
            list.Add(new("software: moe_expert_overhead_us", Math.Max(20, moe[0].Software.Moe.EagerExpertOverheadSeconds * 1e6),
                (c, v) => c with { Software = c.Software with { Moe = c.Software.Moe with { EagerExpertOverheadSeconds = v * 1e-6 } } }, Upper: 2_000));
        if (moe.Any(c => c.Software.Moe.Launch == MoeLaunch.CudaGraphs))
            list.Add(new("software: moe_expert_overhead_graphed_us", Math.Max(20, moe[0].Software.Moe.GraphedExpertOverheadSeconds * 1e6),
                (c, v) => c with { Software = c.Software with { Moe = c.Software.Moe with { GraphedExpertOverheadSeconds = v * 1e-6 } } }, Upper: 2_000));
        return list;
    }

    /// <summary>Fits the parameters to the cases.</summary>
    public static FitResult Fit(IReadOnlyList<ValidationCase> cases, IReadOnlyList<FitParameter> parameters, int maxEvaluations = 4000)
    {
        int evaluations = 0;
        IReadOnlyList<ValidationCase> At(IReadOnlyList<double> values) =>
            cases.Select(c =>
            {
                for (int i = 0; i < parameters.Count; i++)
                    c = parameters[i].Apply(c, values[i]);
                return c;
            }).ToList();
        double Loss(Vector<double> x)
        {
            evaluations++;
            var rows = Validator.Run(At(x.Select((v, i) => parameters[i].Upper * Logistic(v)).ToList()));
            return rows.Sum(r => Math.Pow(Math.Log(r.Prediction.StepTimeSeconds / r.Case.StepTimeS), 2));
        }
        var point = Vector<double>.Build.DenseOfEnumerable(parameters.Select(p => Logit(p.Initial / p.Upper)));
        // Restarted from its own minimum (a fresh simplex) until a restart gains nothing: one simplex stalls on a ridge.
        double best = double.MaxValue;
        for (int restart = 0; restart < 8; restart++)
        {
            var found = new NelderMeadSimplex(1e-7, maxEvaluations).FindMinimum(ObjectiveFunction.Value(Loss), point);
            point = found.MinimizingPoint;
            if (found.FunctionInfoAtMinimum.Value > best * (1 - 1e-6))
                break;
            best = found.FunctionInfoAtMinimum.Value;
        }
        var values = point.Select((v, i) => parameters[i].Upper * Logistic(v)).ToList();
        return new FitResult(parameters.Select((p, i) => (p, values[i])).ToList(), Validator.Run(At(values)), evaluations);
    }

    private static ValidationCase WithGpu(ValidationCase c, GpuSpec gpu) => c with { Cluster = c.Cluster with { Gpu = gpu } };

    private static IReadOnlyDictionary<Precision, double> With(IReadOnlyDictionary<Precision, double>? map, Precision key, double value)
    {
        var copy = map is null ? new Dictionary<Precision, double>() : new Dictionary<Precision, double>(map);
        copy[key] = value;
        return copy;
    }

    private static double Logit(double p) => Math.Log(Math.Clamp(p, 1e-3, 1 - 1e-3) / (1 - Math.Clamp(p, 1e-3, 1 - 1e-3)));

    private static double Logistic(double x) => 1 / (1 + Math.Exp(-x));
}
