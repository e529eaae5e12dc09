using Planner.Executor.Torch;

namespace Planner.Cli.Tests;

/// <summary>
/// NF4 in managed code, for checking what the executor dumps of a QLoRA base: a whole weight's row-major values in
/// blocks of 64, each value divided by its block's absmax (0 in an all-zero block) in fp32, the nearest of the 16
/// levels (the lower one on a tie), and back: level × absmax.
/// </summary>
internal static class Nf4Reference
{
    /// <summary>The values a whole weight dequantizes to once stored in NF4.</summary>
    public static float[] RoundTrip(float[] weight)
    {
        var levels = Nf4Tensor.Levels.Select(l => (float)l).ToArray();
        var result = new float[weight.Length];
        for (int start = 0; start < weight.Length; start += Nf4Tensor.BlockSize)
        {
            int end = Math.Min(weight.Length, start + Nf4Tensor.BlockSize);
            float absmax = 0;
            for (int i = start; i < end; i++)
                absmax = Math.Max(absmax, Math.Abs(weight[i]));
            for (int i = start; i < end; i++)
            {
                float v = absmax > 0 ? weight[i] / absmax : 0f;
                int best = 0;
                for (int k = 1; k < levels.Length; k++)
                    if (Math.Abs(v - levels[k]) < Math.Abs(v - levels[best]))
                        best = k;
                result[i] = levels[best] * absmax;
            }
        }
        return result;
    }
}
