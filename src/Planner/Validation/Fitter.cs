using MathNet.Numerics.LinearAlgebra;
using MathNet.Numerics.Optimization;
using Planner.CostModel.Comm;
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
/// efficiency, each low-precision format's GEMM efficiency, the experts' grouped-GEMM efficiency and the all-to-all
/// efficiency of each network tier an expert-parallel group crosses. Least squares on the logarithm of predicted over
/// measured step time (so 20 % fast and 20 % slow weigh alike), by the Nelder–Mead simplex over each parameter's
/// logit (every value stays a fraction from 0 to 1). Never a correction per row.
/// </summary>
public static class Fitter
{
    /// <summary>
    /// Fits in two stages: the dense rows first, for what they measure best (each GPU's GEMM efficiency and each block-scaled
    /// format's GEMM efficiency relative to per-tensor FP8, which the GPU's efficiency absorbs: with FP8 rows only the two
    /// cannot be told apart), then the MoE rows with those fixed, for the experts' parameters (and the GEMM efficiency of a
    /// GPU no dense row measured).
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
            var first = Fit(dense, Parameters(dense, fixFp8: true));
            values.AddRange(first.Values);
            evaluations += first.Evaluations;
            fitted = Apply(cases, first.Values);
        }
        if (moe.Count > 0)
        {
            var measured = values.Select(v => v.Item1.Key).ToHashSet();
            var moeCases = fitted.Where(c => c.Model.IsMoe).ToList();
            var second = Fit(moeCases, Parameters(moeCases, fixFp8: dense.Count > 0).Where(p => !measured.Contains(p.Key)).ToList());
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

    /// <summary>The parameters the cases exercise.</summary>
    /// <param name="cases">The rows.</param>
    /// <param name="fixFp8">Leave per-tensor FP8's GEMM efficiency at the GPU's (the GPU's efficiency is then fitted on it).</param>
    public static IReadOnlyList<FitParameter> Parameters(IReadOnlyList<ValidationCase> cases, bool fixFp8 = false)
    {
        var list = new List<FitParameter>();
        foreach (var gpu in cases.Select(c => c.Cluster.Gpu).DistinctBy(g => g.Name).OrderBy(g => g.Name, StringComparer.Ordinal))
            list.Add(new($"gpus/{gpu.Name}.yaml: gemm_efficiency", gpu.GemmEfficiency,
                (c, v) => c.Cluster.Gpu.Name == gpu.Name ? WithGpu(c, c.Cluster.Gpu with { GemmEfficiency = v }) : c));
        foreach (var format in new[] { Precision.Fp8, Precision.Mxfp8, Precision.Nvfp4 }.Where(f => !fixFp8 || f != Precision.Fp8))
        {
            var users = cases.Where(c => c.Plan.Precision.IsQuantized() && c.Plan.Precision.RateKey() == format).ToList();
            if (users.Count == 0)
                continue;
            list.Add(new($"quantized_gemm_efficiency.{format.Name()}", users[0].Cluster.Gpu.QuantizedEfficiency(format),
                (c, v) => c.Plan.Precision.IsQuantized() && c.Plan.Precision.RateKey() == format
                    ? WithGpu(c, c.Cluster.Gpu with { QuantizedGemmEfficiency = With(c.Cluster.Gpu.QuantizedGemmEfficiency, format, v) })
                    : c));
        }
        var moe = cases.Where(c => c.Model.IsMoe).ToList();
        if (moe.Count > 0)
            list.Add(new("grouped_gemm_efficiency", moe[0].Cluster.Gpu.GroupedGemmEfficiency,
                (c, v) => c.Model.IsMoe ? WithGpu(c, c.Cluster.Gpu with { GroupedGemmEfficiency = v }) : c));
        if (moe.Count > 0)
            list.Add(new("software: moe_block_overhead_us", Math.Max(100, moe[0].Software.MoeBlockOverheadSeconds * 1e6),
                (c, v) => c.Model.IsMoe ? c with { Software = c.Software with { MoeBlockOverheadSeconds = v * 1e-6 } } : c, Upper: 20_000));
        var expert = moe.Where(c => c.Plan.Ep > 1).ToList();
        bool Crosses(ValidationCase c) => new Placement(c.Plan, c.Cluster.NvlinkDomain).CrossesDomains(Axis.Ep);
        if (expert.Any(c => !Crosses(c) || new Placement(c.Plan, c.Cluster.NvlinkDomain).MembersPerDomain(Axis.Ep) > 1))
            list.Add(new("intra_node: all_to_all_efficiency", expert[0].Cluster.IntraNode.AllToAllEfficiency,
                (c, v) => c with { Cluster = c.Cluster with { IntraNode = c.Cluster.IntraNode with { AllToAllEfficiency = v } } }));
        if (expert.Any(Crosses))
            list.Add(new("inter_node: all_to_all_efficiency", expert[0].Cluster.InterNode.AllToAllEfficiency,
                (c, v) => c with { Cluster = c.Cluster with { InterNode = c.Cluster.InterNode with { AllToAllEfficiency = v } } }));
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
        var start = Vector<double>.Build.DenseOfEnumerable(parameters.Select(p => Logit(p.Initial / p.Upper)));
        var found = new NelderMeadSimplex(1e-7, maxEvaluations).FindMinimum(ObjectiveFunction.Value(Loss), start);
        var values = found.MinimizingPoint.Select((v, i) => parameters[i].Upper * Logistic(v)).ToList();
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
