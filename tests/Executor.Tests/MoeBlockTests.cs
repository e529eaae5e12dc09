using System.Text.Json;
using Planner.CostModel.Specs;
using Planner.Executor.Model;
using Planner.Executor.Torch;
using Xunit;

namespace Planner.Executor.Tests;

/// <summary>
/// A mixture-of-experts block against PyTorch (reference/reference.py, "moe"): the routing (with ties between experts 0
/// and 1, whose router rows are zero), the block's output, the load-balancing loss and every gradient, to 1e-6.
/// </summary>
public sealed class MoeBlockTests(ParityTests.Reference reference) : IClassFixture<ParityTests.Reference>
{
    private const double Tolerance = 1e-6;
    private readonly JsonElement _ref = reference.Json.GetProperty("moe");

    /// <summary>One block of hidden 8 (2 heads), 4 experts of ffn 8, the top 2, a shared expert of 16.</summary>
    private static readonly ModelSpec Spec = new("moe", 1, 8, 2, 2, 16, 16, 8, MlpKind.SwiGlu, NormKind.RmsNorm, PositionKind.Rotary, false, false,
        Moe: new MoeSpec(4, 2, 8, 16, [true]));

    [Fact]
    public void Routing_output_load_balancing_loss_and_gradients_match_pytorch()
    {
        using var scope = DisposeScope.Begin();
        using var model = new GptModel(Spec, [0], false, false, DType.Float32, 1);
        model.Place(Device.Cpu);
        model.RecordsRouting = true;
        var values = new Dictionary<string, Tensor>
        {
            ["attn.o.w"] = Tensor.Zeros([8, 8]), // the block is its MLP
            ["ln2.w"] = ParityTests.Det([8], 0.27, 2.5, 0.3, grad: false),
            ["mlp.router.w"] = Tensor.Cat([Tensor.Zeros([2, 8]), ParityTests.Det([2, 8], 0.19, 1.1, 0.8, grad: false)], 0),
            ["mlp.shared_gate.w"] = ParityTests.Det([16, 8], 0.21, 5.1, 0.5, grad: false),
            ["mlp.shared_up.w"] = ParityTests.Det([16, 8], 0.23, 5.3, 0.5, grad: false),
            ["mlp.shared_down.w"] = ParityTests.Det([8, 16], 0.29, 5.7, 0.5, grad: false),
        };
        for (int e = 0; e < 4; e++)
        {
            values[$"mlp.experts.{e}.gate.w"] = ParityTests.Det([8, 8], 0.11 + 0.01 * e, 0.2 + e, 0.5, grad: false);
            values[$"mlp.experts.{e}.up.w"] = ParityTests.Det([8, 8], 0.13 + 0.01 * e, 0.3 + e, 0.5, grad: false);
            values[$"mlp.experts.{e}.down.w"] = ParityTests.Det([8, 8], 0.17 + 0.01 * e, 0.4 + e, 0.5, grad: false);
        }
        using (TorchRuntime.NoGrad())
            foreach (var (name, value) in values)
                model["layers.0." + name].CopyFrom(value);
        var x = ParityTests.Det([2, 3, 8], 0.31, 0.2);
        var y = model.Block(0, x);
        var loss = (y * y).Mean();
        loss.Backward();
        Same("y", y);
        Assert.Equal(_ref.GetProperty("aux").GetDouble(), model.AuxLossTotal, 6);
        // The busiest expert's load over the mean, from PyTorch's routing: one entry for the block's forward.
        var choice = _ref.GetProperty("choice").EnumerateArray().Select(v => v.GetInt32()).ToArray();
        double busiest = Enumerable.Range(0, 4).Max(e => choice.Count(c => c == e)) / (choice.Length / 4.0);
        Assert.Equal([busiest], model.TakeRoutingLoads());
        Assert.Empty(model.TakeRoutingLoads());
        Same("grad_x", x.Grad);
        Same("grad_ln2", model["layers.0.ln2.w"].Grad);
        Same("grad_router", model["layers.0.mlp.router.w"].Grad);
        foreach (var part in new[] { "gate", "up", "down" })
        {
            Same($"grad_shared_{part}", model[$"layers.0.mlp.shared_{part}.w"].Grad);
            for (int e = 0; e < 4; e++)
                Same($"grad_{part}_{e}", model[$"layers.0.mlp.experts.{e}.{part}.w"].Grad);
        }
    }

    [Fact]
    public void Ties_go_to_the_lower_expert_index()
    {
        // Token 0: experts 0, 1 and 3 tie at the top; token 1: all four tie.
        var probs = new float[] { 0.3f, 0.3f, 0.1f, 0.3f, 0.25f, 0.25f, 0.25f, 0.25f };
        var route = new MoeRouting(probs, 2, 4, 2);
        Assert.Equal(new long[] { 0, 1, 0, 1 }, route.Choice);
        Assert.Equal(new long[] { 0, 1 }, route.TokensOf[0]);
        Assert.Empty(route.TokensOf[3]);
        Assert.Equal(new float[] { 0.5f, 0.5f, 0, 0 }, route.Load());
    }

    private void Same(string key, Tensor? actual)
    {
        Assert.NotNull(actual);
        var expected = _ref.GetProperty(key).EnumerateArray().Select(e => e.GetDouble()).ToArray();
        var got = actual!.ToDoubleArray();
        Assert.Equal(expected.Length, got.Length);
        double worst = expected.Select((v, i) => Math.Abs(v - got[i])).Max();
        Assert.True(worst <= Tolerance, $"moe.{key}: largest difference {worst:E2} above {Tolerance:E0}");
    }
}
