import Foundation

/// A failure reading a metrics file; the message names the file and, where known, the line.
public struct PlotError: Error, CustomStringConvertible {
    /// The file concerned.
    public var file: String
    /// 1-based line number, or nil for the whole file.
    public var line: Int?
    /// What is wrong.
    public var reason: String

    /// "<file>:<line>: <reason>".
    public var description: String { "\(file)\(line.map { ":\($0)" } ?? ""): \(reason)" }
}

/// One named line of a plot.
public struct PlotSeries: Sendable, Equatable {
    /// Legend label.
    public var name: String
    /// Points in drawing order.
    public var x: [Double], y: [Double]
    /// SVG colour; nil takes the plot palette's colour for the series' position.
    public var colour: String?

    /// A series of (x[i], y[i]) points; the arrays must have the same length.
    public init(name: String, x: [Double], y: [Double], colour: String? = nil) {
        precondition(x.count == y.count, "PlotSeries \(name): \(x.count) x values but \(y.count) y values")
        self.name = name; self.x = x; self.y = y; self.colour = colour
    }
}

/// A line chart rendered as standalone SVG: axes with round-number ticks, grid, one polyline per series, legend.
public struct LinePlot: Sendable {
    /// Heading above the chart.
    public var title: String
    /// Axis captions.
    public var xLabel: String, yLabel: String
    /// The lines, drawn in order with `LinePlot.palette` colours.
    public var series: [PlotSeries]
    /// Image size in pixels.
    public var width: Int, height: Int
    /// Legend in the bottom-right corner instead of the top-right (for rising curves such as accuracy).
    public var legendAtBottom = false

    /// Colour-blind-safe line colours (Okabe–Ito), cycled.
    public static let palette = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000"]

    /// A plot of `series` with the given captions.
    public init(title: String, xLabel: String, yLabel: String, series: [PlotSeries], width: Int = 640, height: Int = 400) {
        self.title = title; self.xLabel = xLabel; self.yLabel = yLabel; self.series = series
        self.width = width; self.height = height
    }

    /// The SVG document.
    public func svg() -> String {
        let (left, right, top, bottom) = (70.0, 20.0, 40.0, 55.0)
        let plotWidth = Double(width) - left - right, plotHeight = Double(height) - top - bottom
        let xs = series.flatMap(\.x).filter(\.isFinite), ys = series.flatMap(\.y).filter(\.isFinite)
        let xAxis = LinePlot.axis(low: xs.min() ?? 0, high: xs.max() ?? 1, integers: xs.allSatisfy { $0 == $0.rounded() })
        let yAxis = LinePlot.axis(low: ys.min() ?? 0, high: ys.max() ?? 1, integers: false)
        // Data maps to an area inset by `inset`, so markers on the first and last tick are not cut by the frame.
        let inset = 8.0
        func px(_ x: Double) -> Double { left + inset + (x - xAxis.low) / (xAxis.high - xAxis.low) * (plotWidth - 2 * inset) }
        func py(_ y: Double) -> Double {
            top + plotHeight - inset - (y - yAxis.low) / (yAxis.high - yAxis.low) * (plotHeight - 2 * inset)
        }
        func f(_ value: Double) -> String { String(format: "%.1f", value) }

        var out = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(width)\" height=\"\(height)\" "
            + "viewBox=\"0 0 \(width) \(height)\" font-family=\"sans-serif\" font-size=\"12\">\n"
        out += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
        out += "<text x=\"\(f(left + plotWidth / 2))\" y=\"24\" text-anchor=\"middle\" font-size=\"15\">\(escape(title))</text>\n"
        // Grid lines and tick labels.
        for tick in xAxis.ticks {
            out += "<line x1=\"\(f(px(tick)))\" y1=\"\(f(top))\" x2=\"\(f(px(tick)))\" y2=\"\(f(top + plotHeight))\" stroke=\"#e0e0e0\"/>\n"
            out += "<text x=\"\(f(px(tick)))\" y=\"\(f(top + plotHeight + 16))\" text-anchor=\"middle\">"
                + "\(LinePlot.label(tick, step: xAxis.step))</text>\n"
        }
        for tick in yAxis.ticks {
            out += "<line x1=\"\(f(left))\" y1=\"\(f(py(tick)))\" x2=\"\(f(left + plotWidth))\" y2=\"\(f(py(tick)))\" stroke=\"#e0e0e0\"/>\n"
            out += "<text x=\"\(f(left - 6))\" y=\"\(f(py(tick) + 4))\" text-anchor=\"end\">"
                + "\(LinePlot.label(tick, step: yAxis.step))</text>\n"
        }
        out += "<rect x=\"\(f(left))\" y=\"\(f(top))\" width=\"\(f(plotWidth))\" height=\"\(f(plotHeight))\" fill=\"none\" stroke=\"black\"/>\n"
        out += "<text x=\"\(f(left + plotWidth / 2))\" y=\"\(f(Double(height) - 12))\" text-anchor=\"middle\">\(escape(xLabel))</text>\n"
        out += "<text transform=\"translate(18 \(f(top + plotHeight / 2))) rotate(-90)\" text-anchor=\"middle\">\(escape(yLabel))</text>\n"
        // Lines; a missing (non-finite) value breaks the line rather than dropping to an axis.
        for (index, line) in series.enumerated() {
            let colour = line.colour ?? LinePlot.palette[index % LinePlot.palette.count]
            var runs: [[String]] = [[]]
            for (x, y) in zip(line.x, line.y) {
                if x.isFinite && y.isFinite { runs[runs.count - 1].append("\(f(px(x))),\(f(py(y)))") } else if !runs.last!.isEmpty { runs.append([]) }
            }
            for run in runs where !run.isEmpty {
                out += "<polyline class=\"series\" data-name=\"\(escape(line.name))\" fill=\"none\" stroke=\"\(colour)\" "
                    + "stroke-width=\"2\" points=\"\(run.joined(separator: " "))\"/>\n"
                // Markers make single points and few-epoch runs visible.
                if line.x.count <= 40 {
                    for point in run {
                        let xy = point.split(separator: ",")
                        out += "<circle cx=\"\(xy[0])\" cy=\"\(xy[1])\" r=\"3\" fill=\"\(colour)\"/>\n"
                    }
                }
            }
        }
        // Legend, right side inside the plot area.
        let legendWidth = 30.0 + 7.0 * Double(series.map(\.name.count).max() ?? 0)
        let legendLeft = left + plotWidth - legendWidth - 8
        let legendHeight = Double(series.count) * 18 + 8
        let legendTop = legendAtBottom ? top + plotHeight - legendHeight - 8 : top + 8
        out += "<rect x=\"\(f(legendLeft))\" y=\"\(f(legendTop))\" width=\"\(f(legendWidth))\" height=\"\(f(legendHeight))\" "
            + "fill=\"white\" fill-opacity=\"0.85\" stroke=\"#999\"/>\n"
        for (index, line) in series.enumerated() {
            let y = legendTop + 14 + Double(index) * 18
            let colour = line.colour ?? LinePlot.palette[index % LinePlot.palette.count]
            out += "<line x1=\"\(f(legendLeft + 6))\" y1=\"\(f(y - 4))\" x2=\"\(f(legendLeft + 24))\" y2=\"\(f(y - 4))\" stroke=\"\(colour)\" stroke-width=\"2\"/>\n"
            out += "<text x=\"\(f(legendLeft + 28))\" y=\"\(f(y))\">\(escape(line.name))</text>\n"
        }
        return out + "</svg>\n"
    }

    /// An axis range widened to round-number ticks (about 5 of them, steps of 1, 2 or 5 × 10^k).
    static func axis(low: Double, high: Double, integers: Bool) -> (low: Double, high: Double, step: Double, ticks: [Double]) {
        var (low, high) = (low, high)
        if high <= low {
            // One value: centre it in a unit-wide (or value-proportional) range.
            let half = max(abs(low) * 0.1, integers ? 1 : 0.5)
            (low, high) = (low - half, high + half)
        }
        let rough = (high - low) / 5
        let magnitude = pow(10, floor(log10(rough)))
        var step = [1.0, 2, 5, 10].map { $0 * magnitude }.first { $0 >= rough } ?? 10 * magnitude
        if integers { step = max(step.rounded(.up), 1) }
        let first = (low / step).rounded(.down) * step, last = (high / step).rounded(.up) * step
        let ticks = (0...Int(((last - first) / step).rounded())).map { first + Double($0) * step }
        return (first, last, step, ticks)
    }

    /// Tick text with as many decimals as the step needs (0.25 steps show 2, 5 steps none).
    static func label(_ value: Double, step: Double) -> String {
        var decimals = 0, scaled = step
        while decimals < 8 && abs(scaled - scaled.rounded()) > 1e-9 * max(1, abs(scaled)) { scaled *= 10; decimals += 1 }
        // -0.0 would print as "-0".
        return String(format: "%.\(decimals)f", abs(value) < step * 1e-9 ? 0 : value)
    }

    private func escape(_ text: String) -> String {
        text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
    }
}

/// Per-epoch curves read from the trainer's metrics JSON lines, plotted as loss and accuracy charts.
///
/// Every numeric `*_loss` field of an `"event":"epoch"` record becomes a loss series named by its prefix (train,
/// validation, test, ...), every `*_accuracy` field an accuracy series. When an epoch appears more than once (a run
/// resumed into the same file) the last record wins.
public struct LearningCurves: Sendable {
    /// Loss series, train first, then validation, test and others by name.
    public let losses: [PlotSeries]
    /// Accuracy series in the same order (empty for regression).
    public let accuracies: [PlotSeries]

    /// Reads the metrics file at `path`.
    public static func read(path: String) throws -> LearningCurves {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw PlotError(file: path, reason: "cannot read the metrics file (missing or unreadable)")
        }
        return try LearningCurves(jsonLines: String(decoding: data, as: UTF8.self), source: path)
    }

    /// Parses metrics JSON lines; `source` names the text in errors. Throws when a line is not a JSON object or
    /// when no epoch record is present.
    public init(jsonLines: String, source: String) throws {
        var records: [Int: [String: Double]] = [:]
        for (offset, line) in jsonLines.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let text = line.trimmingCharacters(in: .whitespacesAndNewlines)
            guard !text.isEmpty else { continue }
            let object: [String: Any]
            do {
                guard let parsed = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any] else {
                    throw PlotError(file: source, line: offset + 1, reason: "is not a JSON object")
                }
                object = parsed
            } catch let error as PlotError { throw error } catch {
                throw PlotError(file: source, line: offset + 1, reason: "is not valid JSON: \(error.localizedDescription)")
            }
            guard object["event"] as? String == "epoch" else { continue }
            guard let epoch = object["epoch"].flatMap(LearningCurves.number).flatMap(Int.init(exactly:)) else {
                throw PlotError(file: source, line: offset + 1, reason: "epoch record has no numeric \"epoch\" field")
            }
            var values: [String: Double] = [:]
            for (key, value) in object where key.hasSuffix("_loss") || key.hasSuffix("_accuracy") {
                // JSON null (no accuracy for regression, non-finite loss) is simply absent.
                if let number = LearningCurves.number(value) { values[key] = number }
            }
            records[epoch] = values
        }
        guard !records.isEmpty else { throw PlotError(file: source, line: nil, reason: "holds no {\"event\":\"epoch\"} records") }
        let epochs = records.keys.sorted()
        func curves(suffix: String) -> [PlotSeries] {
            let keys = Set(records.values.flatMap { $0.keys.filter { $0.hasSuffix(suffix) } })
            let rank = ["train": 0, "validation": 1, "test": 2]
            let names = keys.map { String($0.dropLast(suffix.count)) }.sorted { (rank[$0] ?? 3, $0) < (rank[$1] ?? 3, $1) }
            // The same split keeps its colour in the loss and the accuracy plot.
            let others = names.filter { rank[$0] == nil }
            return names.map { name in
                let slot = rank[name] ?? (3 + others.firstIndex(of: name)!)
                return PlotSeries(name: name, x: epochs.map(Double.init), y: epochs.map { records[$0]![name + suffix] ?? .nan },
                                  colour: LinePlot.palette[slot % LinePlot.palette.count])
            }
        }
        losses = curves(suffix: "_loss")
        accuracies = curves(suffix: "_accuracy")
    }

    /// A JSON number as Double (JSONSerialization may hand back Int, Double or NSNumber); nil for anything else.
    /// (No `is Bool` test: on Linux every NSNumber of 0 or 1 passes it.)
    static func number(_ value: Any) -> Double? {
        if let double = value as? Double { return double }
        if let int = value as? Int { return Double(int) }
        if let number = value as? NSNumber { return number.doubleValue }
        return nil
    }

    /// Loss against epoch.
    public func lossPlot(title: String = "Loss") -> LinePlot {
        LinePlot(title: title, xLabel: "epoch", yLabel: "loss", series: losses)
    }

    /// Accuracy against epoch, nil when no record has an accuracy.
    public func accuracyPlot(title: String = "Accuracy") -> LinePlot? {
        guard !accuracies.isEmpty else { return nil }
        var plot = LinePlot(title: title, xLabel: "epoch", yLabel: "accuracy", series: accuracies)
        plot.legendAtBottom = true
        return plot
    }

    /// Writes `<prefix>-loss.svg` and, with accuracies, `<prefix>-accuracy.svg`; returns the paths written.
    @discardableResult
    public func writeSVG(prefix: String) throws -> [String] {
        var written: [String] = []
        for (suffix, plot) in [("loss", lossPlot()), ("accuracy", accuracyPlot())] {
            guard let plot else { continue }
            let path = "\(prefix)-\(suffix).svg"
            do { try Data(plot.svg().utf8).write(to: URL(fileURLWithPath: path), options: .atomic) } catch {
                throw PlotError(file: path, line: nil, reason: "cannot write the plot: \(error.localizedDescription)")
            }
            written.append(path)
        }
        return written
    }
}
