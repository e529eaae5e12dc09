using System.CommandLine;
using Planner.Executor.Training;

namespace Planner.Cli.Commands;

/// <summary>The values a run trains with: its flags, or on <c>--resume</c> what the checkpoint recorded where no flag
/// gives them (the seed always the checkpoint's: the frozen weights and synthetic tokens come from it).</summary>
/// <param name="Plan">The plan file (on resume without --plan: the checkpoint's copy).</param>
/// <param name="Steps">Steps of this invocation.</param>
/// <param name="FirstStep">The first step's number (the checkpoint's steps done; 0 without resume).</param>
public sealed record RunArguments(string Plan, int Steps, int FirstStep, ulong Seed, double Lr, double AdamEps, double? LossScale, string? Data, int DataBytes)
{
    /// <summary>A flag's value when the command line gives it, else <paramref name="recorded"/> when resuming, else
    /// the flag's default.</summary>
    public static T Pick<T>(ParseResult r, Option<T> option, Func<CheckpointManifest, T> recorded, CheckpointManifest? resumed) =>
        resumed is not null && r.GetResult(option) is not { Implicit: false } ? recorded(resumed) : r.GetValue(option)!;

    /// <summary>The arguments of <paramref name="r"/>, continuing <paramref name="resumed"/> (null: a fresh run).</summary>
    internal static RunArguments Of(ParseResult r, RunCommand.Flags flags, (string Folder, CheckpointManifest Manifest)? resumed)
    {
        var m = resumed?.Manifest;
        string plan = r.GetValue(flags.Plan)
            ?? (resumed is { } x ? Path.Combine(x.Folder, CheckpointManifest.PlanCopy) : throw new Planner.CostModel.Specs.InputException("--plan: a plan file is required (or --resume DIR)"));
        ulong seed = Pick(r, flags.Seed, c => c.Seed, m);
        if (m is not null && seed != m.Seed)
            throw new Planner.CostModel.Specs.InputException($"--seed: {seed} is not the checkpoint's {m.Seed} (its frozen weights and synthetic tokens come from it)");
        return new RunArguments(plan, r.GetValue(flags.Steps), m?.Step ?? 0, seed, Pick(r, flags.Lr, c => c.Lr, m), Pick(r, flags.AdamEps, c => c.AdamEps, m),
            Pick(r, flags.LossScale, c => c.LossScale, m), Pick(r, flags.Data, c => c.Data, m), Pick(r, flags.DataBytes, c => c.DataBytes, m));
    }
}
