using System.CommandLine;
using Planner.CostModel.Specs;

namespace Planner.Cli.Commands;

/// <summary>The command tree and the one place where errors become exit codes.</summary>
public static class Cli
{
    /// <summary>Exit code of success.</summary>
    public const int Ok = 0;
    /// <summary>Exit code of an internal error.</summary>
    public const int InternalError = 1;
    /// <summary>Exit code of bad input or an infeasible request.</summary>
    public const int BadInput = 2;

    /// <summary>Builds the root command writing to the given streams.</summary>
    public static RootCommand Build(TextWriter stdout)
    {
        var root = new RootCommand("planner: plan, price and validate parallel LLM training configurations");
        root.Subcommands.Add(PredictCommand.Create(stdout));
        root.Subcommands.Add(ValidateCommand.Create(stdout));
        root.Subcommands.Add(PlanCommand.Create(stdout));
        root.Subcommands.Add(BenchCommand.Create(stdout));
        root.Subcommands.Add(PresetsCommand.Create(stdout));
        root.Subcommands.Add(ExportCommand.Create(stdout));
        root.Subcommands.Add(WhatIfCommand.Create(stdout));
        root.Subcommands.Add(AblateCommand.Create(stdout));
        root.Subcommands.Add(RunCommand.Create(stdout));
        root.Subcommands.Add(RunCommand.CreateRank(stdout));
        foreach (var c in ProfileCommand.Create(stdout))
            root.Subcommands.Add(c);
        return root;
    }

    /// <summary>One line for a parse error, led by the flag it concerns when the parser's text does not name it.</summary>
    private static string Describe(System.CommandLine.Parsing.ParseError error)
    {
        string text = string.Join(' ', error.Message.Split('\n', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries));
        string? flag = error.SymbolResult switch
        {
            System.CommandLine.Parsing.OptionResult o => o.Option.Name,
            System.CommandLine.Parsing.ArgumentResult { Parent: System.CommandLine.Parsing.OptionResult o } => o.Option.Name,
            _ => null,
        };
        return flag is not null && !text.Contains(flag, StringComparison.Ordinal) ? $"{flag}: {text}" : text;
    }

    /// <summary>Parses and runs; bad input is one line on stderr and exit code 2, never a stack trace.</summary>
    public static int Run(string[] args, TextWriter stdout, TextWriter stderr) => Guard(() =>
    {
        var root = Build(stdout);
        var parsed = root.Parse(args);
        if (parsed.Errors.Count > 0)
        {
            stderr.WriteLine($"planner: {Describe(parsed.Errors[0])}");
            return BadInput;
        }
        return parsed.Invoke(new InvocationConfiguration { Output = stdout, Error = stderr, EnableDefaultExceptionHandler = false });
    }, stderr);

    /// <summary>Runs <paramref name="body"/> and maps what it throws to an exit code and one line on
    /// <paramref name="stderr"/>: the one place where failures become exit codes (the fuzzers call a loader through it).</summary>
    public static int Guard(Func<int> body, TextWriter stderr)
    {
        try
        {
            return body();
        }
        catch (InputException e)
        {
            stderr.WriteLine($"planner: {OneLine(ProblemFlags.Message(e))}");
            return BadInput;
        }
        catch (RankFailedException e)
        {
            stderr.WriteLine($"planner: {OneLine(e.Message)}");
            return e.BadInput ? BadInput : InternalError;
        }
        catch (NotSupportedException e)
        {
            stderr.WriteLine($"planner: {OneLine(e.Message)}");
            return BadInput;
        }
        catch (Exception e)
        {
            stderr.WriteLine($"planner: internal error: {e.GetType().Name}: {e.Message.Split('\n')[0]}");
            return InternalError;
        }
    }

    /// <summary>A message kept on its one line: a line break a file's value carried into it is written as \n.</summary>
    private static string OneLine(string message) => message.Replace("\r", "\\r").Replace("\n", "\\n");
}
