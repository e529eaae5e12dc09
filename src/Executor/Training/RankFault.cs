using System.Globalization;
using Planner.CostModel.Specs;

namespace Planner.Executor.Training;

/// <summary>What an injected fault does to its rank process.</summary>
public enum FaultAction
{
    /// <summary>The process sends itself SIGKILL (a crash: no error, no clean-up).</summary>
    Kill,
    /// <summary>The process sends itself SIGSTOP (a hang: every thread stops, its heartbeat too).</summary>
    Hang,
    /// <summary>The process exits with code 3 (a rank that gives up).</summary>
    Exit,
    /// <summary>The rank's training blocks for good while its heartbeat goes on (a deadlock: only its peers'
    /// collective timeout finds it).</summary>
    Stall,
}

/// <summary>
/// A test hook: the fault a rank process injects into itself when its launcher's environment has
/// <c>PLANNER_FAULT=rank=R,step=S,action=kill|hang|exit|stall[,attempt=A]</c>: rank R, as it starts step S of attempt A
/// (0: the first run, 1: the first restart; default 0), kills, stops or exits itself, or blocks its training. Not for
/// production: it breaks the run.
/// </summary>
public sealed record RankFault(int Rank, int Step, FaultAction Action, int Attempt)
{
    /// <summary>The environment variable that asks for a fault.</summary>
    public const string Variable = "PLANNER_FAULT";

    /// <summary>The environment variable by which the launcher tells a rank which attempt it belongs to (0: the first).</summary>
    public const string AttemptVariable = "PLANNER_ATTEMPT";

    /// <summary>The exit code of <see cref="FaultAction.Exit"/>.</summary>
    public const int ExitCode = 3;

    /// <summary>The fault the environment asks for, or null.</summary>
    /// <exception cref="InputException">The variable is malformed.</exception>
    public static RankFault? FromEnvironment() =>
        Environment.GetEnvironmentVariable(Variable) is { Length: > 0 } text ? Parse(text) : null;

    /// <summary>This process's attempt as its launcher numbered it (0 outside a launcher).</summary>
    /// <exception cref="InputException">The variable is not a non-negative integer.</exception>
    public static int AttemptFromEnvironment() => Environment.GetEnvironmentVariable(AttemptVariable) is { } text
        ? int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out int a) ? a
            : throw new InputException($"environment variable {AttemptVariable}: '{text}' is not a non-negative integer")
        : 0;

    /// <summary>Reads <c>rank=R,step=S,action=kill|hang|exit|stall[,attempt=A]</c>.</summary>
    /// <exception cref="InputException">A key is unknown, missing or not a non-negative integer, or the action unknown.</exception>
    public static RankFault Parse(string text)
    {
        var values = new Dictionary<string, string>();
        foreach (var part in text.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries))
        {
            int eq = part.IndexOf('=');
            string key = eq < 0 ? part : part[..eq];
            if (eq < 0 || key is not ("rank" or "step" or "action" or "attempt") || !values.TryAdd(key, part[(eq + 1)..]))
                throw new InputException($"environment variable {Variable}: '{part}' is not one of rank=R, step=S, action=kill|hang|exit|stall, attempt=A (each once)");
        }
        int Number(string key, int? fallback)
        {
            if (!values.TryGetValue(key, out var v))
                return fallback ?? throw new InputException($"environment variable {Variable}: '{text}' lacks {key}=");
            return int.TryParse(v, NumberStyles.None, CultureInfo.InvariantCulture, out int n)
                ? n : throw new InputException($"environment variable {Variable}: {key} '{v}' is not a non-negative integer");
        }
        var action = values.GetValueOrDefault("action") switch
        {
            "kill" => FaultAction.Kill,
            "hang" => FaultAction.Hang,
            "exit" => FaultAction.Exit,
            "stall" => FaultAction.Stall,
            var a => throw new InputException($"environment variable {Variable}: action '{a}' is not kill, hang, exit or stall"),
        };
        return new RankFault(Number("rank", null), Number("step", null), action, Number("attempt", 0));
    }

    /// <summary>Whether the fault strikes <paramref name="rank"/> as it starts <paramref name="step"/> of
    /// <paramref name="attempt"/>.</summary>
    public bool Strikes(int rank, int step, int attempt) => rank == Rank && step == Step && attempt == Attempt;

    /// <summary>Does the fault to this process (says so on standard error first).</summary>
    public void Strike(TextWriter error)
    {
        error.WriteLine($"planner: injected fault ({Variable}): rank {Rank} {Action.ToString().ToLowerInvariant()} at step {Step} of attempt {Attempt}");
        error.Flush();
        switch (Action)
        {
            case FaultAction.Kill:
                ProcessSignals.ToSelf(ProcessSignals.Kill);
                break;
            case FaultAction.Hang:
                ProcessSignals.ToSelf(ProcessSignals.Stop);
                break;
            case FaultAction.Stall:
                Thread.Sleep(Timeout.Infinite);
                break;
            default:
                Environment.Exit(ExitCode);
                break;
        }
    }
}
