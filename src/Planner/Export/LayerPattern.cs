using System.Globalization;
using System.Text;

namespace Planner.Cli.Export;

/// <summary>
/// A per-block pattern (which blocks are MoE, which attend through a window) as the Python list expression Megatron-LM
/// evaluates for <c>--moe-layer-freq</c> and <c>--window-attn-skip-freq</c>: 1 where the block has the property, 0
/// where not, e.g. <c>([0]*3+[1]*58)</c> or <c>([1]+[0])*18</c>.
/// </summary>
/// <remarks>
/// Megatron's <c>moe_freq_type</c> (megatron/training/arguments.py) evaluates a string containing "[" after checking
/// that it holds only digits, commas, brackets, parentheses, "+" and "*"; the pattern's length must be the number of
/// layers. The expression is the shortest repeating period, run-length encoded, times the repeat count.
/// </remarks>
public static class LayerPattern
{
    /// <summary>The Python list expression of <paramref name="pattern"/> (one entry per block).</summary>
    public static string Expression(IReadOnlyList<bool> pattern)
    {
        int n = pattern.Count;
        int period = Enumerable.Range(1, n).First(p => n % p == 0 && Enumerable.Range(0, n).All(i => pattern[i] == pattern[i % p]));
        var terms = new List<string>();
        for (int i = 0; i < period;)
        {
            int j = i;
            while (j < period && pattern[j] == pattern[i])
                j++;
            string one = pattern[i] ? "[1]" : "[0]";
            terms.Add(j - i == 1 ? one : $"{one}*{(j - i).ToString(CultureInfo.InvariantCulture)}");
            i = j;
        }
        var b = new StringBuilder("(").Append(string.Join('+', terms)).Append(')');
        if (period < n)
            b.Append('*').Append((n / period).ToString(CultureInfo.InvariantCulture));
        return b.ToString();
    }
}
