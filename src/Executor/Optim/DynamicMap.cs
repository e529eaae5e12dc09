using Planner.Executor.Torch;

namespace Planner.Executor.Optim;

/// <summary>
/// The 256 values an 8-bit code stands for in 8-bit Adam's block-wise quantization (Dettmers et al. 2022, "8-bit
/// Optimizers via Block-wise Quantization", dynamic quantization): per decade 10^−6 … 10^0 a run of linearly spaced
/// fractions in [0.1, 1] of that decade, more of them the larger the decade (2^k for decade k in the signed map, 2^(k+1)
/// in the unsigned one), each the midpoint of its interval; the signed map mirrors them; both add 0 and 1. A value
/// normalized by its block's absolute maximum is coded as the nearest of them.
/// </summary>
public static class DynamicMap
{
    private const int Decades = 7;

    /// <summary>The 256 values, ascending: signed (the first moment) or not (the second).</summary>
    public static double[] Values(bool signed)
    {
        var values = new List<double> { 0, 1 };
        for (int k = 0; k < Decades; k++)
        {
            int count = signed ? 1 << k : 2 << k;
            double scale = Math.Pow(10, k - (Decades - 1));
            for (int j = 0; j < count; j++)
            {
                double lo = 0.1 + 0.9 * j / count, hi = 0.1 + 0.9 * (j + 1) / count;
                values.Add(scale * (lo + hi) / 2);
                if (signed)
                    values.Add(-scale * (lo + hi) / 2);
            }
        }
        values.Sort();
        return values.ToArray();
    }

    /// <summary>The map as an fp32 tensor and the midpoints between its neighbours (the nearest value's boundaries).</summary>
    public static (Tensor Map, Tensor Boundaries) Tensors(bool signed, Device device)
    {
        var v = Values(signed);
        var map = Tensor.From(v.Select(x => (float)x).ToArray(), v.Length).On(device);
        var mid = Tensor.From(v.Zip(v.Skip(1), (a, b) => (float)((a + b) / 2)).ToArray(), v.Length - 1).On(device);
        return (map, mid);
    }
}
